"""The local runtime as a background process: start it detached, find it, stop it.

What ``ofsre platform up --detach``, ``status`` and ``down`` do, callable from a test::

    status = start_detached(cfg, on_started=lambda pid, log: print(pid, log))   # its /status once running
    state = read_state(RuntimePaths(cfg.data_dir))                             # runtime.json, or None
    stopped = stop_detached(RuntimePaths(cfg.data_dir), timeout_s=60)          # SIGTERM, SIGKILL if it hangs

The detached runtime is ``python -m ofsre.platform.runtime <config.json>`` (:func:`serve_config_file`)
in a session of its own, logging to ``<data dir>/logs/runtime.log``; it writes its pid, phase and
endpoints to ``<data dir>/runtime.json``. Processes are recognised by pid *and* creation time, so
a reused pid is never signalled. Failures raise :class:`~.runtime.RuntimeStartError` with the
message to show.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .config import RuntimeConfig, config_from_dict, config_to_dict
from .files import atomic_write_json, read_json
from .runtime import LocalRuntime, RuntimePaths, RuntimeStartError, process_alive
from .supervisor import tail

__all__ = ["start_detached", "serve_config_file", "read_state", "fetch_status", "stop_detached", "Stopped",
           "basic_logging"]

_log = logging.getLogger(__name__)
_POLL_S = 0.2
_LEFTOVER_GRACE_S = 10.0


def start_detached(cfg: RuntimeConfig, *, on_started: Callable[[int, Path], None] | None = None,
                   ) -> dict[str, Any] | None:
    """Start the runtime in the background and wait until it is running; its ``/status`` (None
    when that does not answer yet). ``on_started(pid, log_path)`` is called once it is spawned.

    Raises :class:`RuntimeStartError` when one is already running, when it exits while starting,
    or when it is not running after twice ``cfg.startup_timeout`` plus a minute (it is then sent
    SIGTERM).
    """
    paths = RuntimePaths(cfg.data_dir)
    paths.logs.mkdir(parents=True, exist_ok=True)
    state = read_json(paths.state)
    if state and process_alive(state.get("pid"), state.get("create_time")):
        raise RuntimeStartError(f"already running (pid {state['pid']}); `ofsre platform down` first")
    cfg_path = cfg.data_dir / "runtime-config.json"
    atomic_write_json(cfg_path, config_to_dict(cfg))
    log_path = paths.logs / "runtime.log"
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen([sys.executable, "-m", "ofsre.platform.runtime", str(cfg_path)],
                                 stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    if on_started is not None:
        on_started(child.pid, log_path)
    deadline = time.monotonic() + 2 * cfg.startup_timeout + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeStartError(f"the runtime exited with code {child.returncode}:\n{tail(log_path, 25)}")
        state = read_json(paths.state)
        if state and state.get("pid") == child.pid and state.get("phase") == "running":
            return fetch_status(state)
        time.sleep(_POLL_S)
    os.killpg(child.pid, signal.SIGTERM)
    raise RuntimeStartError(f"the runtime did not become ready in time; see {log_path}")


def basic_logging() -> None:
    """The runtime's own log lines (``up`` in the foreground, the detached runtime's log file)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # readiness polls would flood the log


def serve_config_file(path: Path) -> int:
    """Entry point of the detached runtime (``python -m ofsre.platform.runtime <config.json>``)."""
    basic_logging()
    saved = read_json(path)
    if saved is None:
        _log.error("no runtime configuration in %s", path)
        return 1
    cfg = config_from_dict(saved)
    try:
        LocalRuntime(cfg).serve(on_ready=lambda rt: _log.info("platform is up"))
    except RuntimeStartError as exc:
        _log.error("start failed: %s", exc)
        return 1
    return 0


def read_state(paths: RuntimePaths) -> dict[str, Any] | None:
    """What the runtime wrote to ``runtime.json`` (pid, phase, endpoints, replicas), or None."""
    return read_json(paths.state)


def fetch_status(state: dict[str, Any]) -> dict[str, Any] | None:
    """The runtime's ``/status`` JSON, or None when it has no status endpoint or does not answer."""
    url = (state.get("endpoints") or {}).get("runtime_status")
    if not url:
        return None
    try:
        return httpx.get(url, timeout=5.0).json()
    except (httpx.HTTPError, ValueError):
        return None


@dataclass(frozen=True)
class Stopped:
    """What :func:`stop_detached` did."""

    pid: int | None        # the runtime's pid, as its state file gave it
    was_running: bool      # it was alive and was sent SIGTERM
    killed: bool           # it did not stop within the timeout: SIGKILL
    leftovers: int         # orphaned replica processes stopped as well


def stop_detached(paths: RuntimePaths, timeout_s: float, *,
                  on_stopping: Callable[[int], None] | None = None) -> Stopped | None:
    """Stop the runtime whose state is in ``paths`` (None: there is none) and remove its state.

    SIGTERM, then SIGKILL after ``timeout_s``; then any replica process a killed runtime left
    behind. ``on_stopping(pid)`` is called before the runtime is signalled.
    """
    state = read_state(paths)
    if not state:
        return None
    pid, created = state.get("pid"), state.get("create_time")
    running = killed = False
    if isinstance(pid, int) and process_alive(pid, created):
        running = True
        if on_stopping is not None:
            on_stopping(pid)
        killed = not _terminate(pid, created, timeout_s)
    leftovers = _stop_leftovers(state)
    paths.state.unlink(missing_ok=True)
    return Stopped(pid=pid, was_running=running, killed=killed, leftovers=leftovers)


def _terminate(pid: int, created: float | None, timeout_s: float) -> bool:
    """SIGTERM ``pid``; True if it exits within ``timeout_s``, else SIGKILL and False."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process_alive(pid, created):
        time.sleep(_POLL_S)
    if not process_alive(pid, created):
        return True
    os.kill(pid, signal.SIGKILL)
    return False


def _stop_leftovers(state: dict[str, Any]) -> int:
    """Replica processes a killed runtime left behind (matched by pid and creation time)."""
    alive = [r for rs in (state.get("replicas") or {}).values() for r in rs
             if process_alive(r.get("pid"), r.get("create_time"))]
    for r in alive:
        os.kill(r["pid"], signal.SIGTERM)
    deadline = time.monotonic() + _LEFTOVER_GRACE_S
    while time.monotonic() < deadline and any(process_alive(r["pid"], r["create_time"]) for r in alive):
        time.sleep(_POLL_S)
    for r in alive:
        if process_alive(r["pid"], r["create_time"]):
            os.kill(r["pid"], signal.SIGKILL)
    return len(alive)
