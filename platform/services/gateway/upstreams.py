"""Where the gateway sends each module's traffic, and in which order (round robin).

The table maps a service (``consents``, ``accounts``, ``payments``) to its replicas' base
URLs. It comes from ``OFSRE_UPSTREAMS`` (JSON) and, if set, ``OFSRE_UPSTREAMS_FILE`` (same
JSON; its services replace the variable's). :meth:`Upstreams.watch` re-reads the file every
second when its modification time or size changed, off the request path; a file that does
not parse is logged and the last good table kept. On Kubernetes ``OFSRE_UPSTREAMS`` names one
Service URL per module and kube-proxy spreads the load.

``order(service)`` returns every replica, starting at the next one in the rotation, so the
proxy can move on to the next replica when one refuses the connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from ..settings import parse_upstreams

__all__ = ["Upstreams"]

_log = logging.getLogger("ofsre.platform.gateway")


class Upstreams:
    def __init__(self, static: dict[str, tuple[str, ...]] | None = None, file: Path | None = None) -> None:
        self._static = dict(static or {})
        self._table = dict(self._static)
        self._file = file
        self._stamp: tuple[int, int] | None = None
        self._next: dict[str, int] = {}
        if file is not None:
            self.reload_if_changed()

    @property
    def table(self) -> dict[str, tuple[str, ...]]:
        return dict(self._table)

    def order(self, service: str) -> tuple[str, ...]:
        urls = self._table.get(service, ())
        if len(urls) <= 1:
            return urls
        i = self._next.get(service, 0) % len(urls)
        self._next[service] = i + 1
        return urls[i:] + urls[:i]

    def reload_if_changed(self) -> bool:
        """Re-read the file if it changed; True when the table was replaced."""
        if self._file is None:
            return False
        try:
            st = os.stat(self._file)
        except FileNotFoundError:
            return False  # not written yet (the runtime writes it once replicas are up)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            from_file = parse_upstreams(Path(self._file).read_text())
        except (OSError, ValueError) as exc:
            _log.warning("ignoring upstreams file %s: %s", self._file, exc)
            return False
        self._table = {**self._static, **from_file}
        _log.info("upstreams reloaded", extra={"upstreams": self._table})
        return True

    async def watch(self, interval_s: float = 1.0) -> None:
        """Poll the file forever (run it as a task; cancel it to stop)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.reload_if_changed()
            except Exception:  # noqa: BLE001 - the watcher must outlive a bad moment on the disk
                _log.exception("upstreams reload failed")
