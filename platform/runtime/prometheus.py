"""Prometheus scrape configuration for the local runtime.

``ofsre platform up`` writes ``<data_dir>/prometheus/prometheus.yml`` with two jobs:

* ``kube-state-metrics``: the runtime's own endpoint, serving the kube_* series under the
  job name they have on a cluster (``honor_labels`` keeps their ``namespace`` label);
* ``ofsre-services``: file_sd over ``targets.json``, one group per replica's ``/metrics``
  with the labels a Kubernetes pod scrape would give (``namespace``, ``pod``, and ``job`` set
  to the service name). The runtime rewrites the file atomically as replicas come and go;
  Prometheus re-reads it on change.

With ``--prometheus`` the runtime also starts ``prometheus`` itself on a free port, as one more
supervised process (readiness: ``/-/ready``).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

from .files import atomic_write_json
from .supervisor import READY, Deployment

__all__ = ["write_scrape_config", "write_targets", "targets_for", "prometheus_command", "SERVICES_JOB",
           "KSM_JOB"]

SERVICES_JOB = "ofsre-services"
KSM_JOB = "kube-state-metrics"


def targets_for(deployments: Iterable[Deployment], namespace: str) -> list[dict]:
    """file_sd groups: one per ready replica (a replica that is not ready is not scraped)."""
    groups = []
    for dep in deployments:
        for r in dep.replicas():
            if r.state == READY:
                groups.append({"targets": [f"{r.host}:{r.port}"],
                               "labels": {"job": dep.name, "namespace": namespace, "pod": r.name}})
    return sorted(groups, key=lambda g: g["labels"]["pod"])


def write_targets(path: Path, deployments: Iterable[Deployment], namespace: str) -> None:
    atomic_write_json(path, targets_for(deployments, namespace))


def write_scrape_config(directory: Path, *, runtime_target: str, scrape_interval: str = "5s") -> Path:
    """Write prometheus.yml (and an empty targets.json if absent); returns the config's path."""
    directory.mkdir(parents=True, exist_ok=True)
    targets = directory / "targets.json"
    if not targets.exists():
        atomic_write_json(targets, [])
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {"job_name": KSM_JOB, "honor_labels": True,
             "static_configs": [{"targets": [runtime_target]}]},
            {"job_name": SERVICES_JOB,
             "file_sd_configs": [{"files": [str(targets.resolve())], "refresh_interval": scrape_interval}]},
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text("# Written by `ofsre platform up`; rewritten on every start.\n"
                    + yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_command(binary: str, config_path: Path, data_dir: Path) -> tuple[str, ...]:
    """The command line for a supervised Prometheus ({host}/{port} filled in by the Deployment)."""
    return (binary, f"--config.file={config_path.resolve()}", f"--storage.tsdb.path={data_dir.resolve()}",
            "--storage.tsdb.retention.time=1d", "--web.listen-address={host}:{port}")
