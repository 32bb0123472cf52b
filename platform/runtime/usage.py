"""Per-replica CPU and memory usage with psutil: the local stand-in for metrics-server.

CPU is a rate, so a replica needs two samples: the first call for a replica only records a
baseline (the replica has no CPU metric yet, which the HPA treats as a "missing" pod), every
later call returns the cores used since the previous call::

    sampler = UsageSampler()
    sampler.sample(replica, now)   # {"memory": PodMetric(rss, now, 0)} — CPU baseline taken
    sampler.sample(replica, now2)  # {"cpu": PodMetric(cores, now2, now2 - now), "memory": ...}

A replica's child processes are included (a service that forks workers is one pod).
Memory is the resident set size (close to the working set Kubernetes uses).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil

from .hpa import CPU, MEMORY, PodMetric
from .supervisor import Replica

__all__ = ["UsageSampler", "ProcessUsage"]


@dataclass(frozen=True)
class ProcessUsage:
    cpu_seconds: float  # user + system, the process and its children
    rss_bytes: int


def _read(proc: psutil.Process) -> ProcessUsage:
    procs = [proc]
    try:
        procs += proc.children(recursive=True)
    except psutil.Error:
        pass
    cpu, rss = 0.0, 0
    for p in procs:
        try:
            with p.oneshot():
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss
        except psutil.Error:
            continue  # exited between listing and reading: its time is gone with it
    return ProcessUsage(cpu, rss)


class UsageSampler:
    """Turns successive psutil readings into :class:`~ofsre.platform.runtime.hpa.PodMetric` samples."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, tuple[int, float, float]] = {}  # replica name -> (pid, time, cpu seconds)
        self._procs: dict[str, psutil.Process] = {}

    def sample(self, replica: Replica, now: float) -> dict[str, PodMetric]:
        """Usage samples for one replica at ``now`` (runtime clock); {} if the process is gone."""
        proc = self._process(replica)
        if proc is None:
            return {}
        usage = _read(proc)
        out = {MEMORY: PodMetric(float(usage.rss_bytes), now, 0.0)}
        with self._lock:
            previous = self._last.get(replica.name)
            self._last[replica.name] = (replica.pid, now, usage.cpu_seconds)
        if previous is not None and previous[0] == replica.pid and now > previous[1]:
            window = now - previous[1]
            cores = max(0.0, usage.cpu_seconds - previous[2]) / window
            out[CPU] = PodMetric(cores, now, window)
        return out

    def forget(self, keep: set[str]) -> None:
        """Drop the baselines of replicas not in ``keep`` (bounded memory as replicas come and go)."""
        with self._lock:
            for name in set(self._last) - keep:
                del self._last[name]
            for name in set(self._procs) - keep:
                del self._procs[name]

    def _process(self, replica: Replica) -> psutil.Process | None:
        proc = self._procs.get(replica.name)
        if proc is None or proc.pid != replica.pid:
            try:
                proc = psutil.Process(replica.pid)
            except psutil.Error:
                return None
            self._procs[replica.name] = proc
        return proc if proc.is_running() else None
