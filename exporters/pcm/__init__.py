"""ofsre.exporters.pcm: regulatory metrics reporting to the Open Finance Brasil PCM.

The pieces, in the order a report travels:

1. :mod:`ofsre.instrumentation.pcm` captures one report per Open Finance call between
   institutions (SERVER in the middleware, CLIENT in the instrumented client) — a bounded,
   O(1) enqueue on the request path — and its writer thread puts them in
2. :mod:`.store`, a durable SQLite store (WAL) shared by the processes of a host, bounded,
   which keeps each report with the PCM's result once delivered;
3. :mod:`.sender` (``ofsre pcm send``) delivers them, oldest first, at most the catalog's
   ``pcm_max_reports`` per request, with an OAuth2 client-credentials token; 207 partials,
   413 splits, 429/5xx backoff honouring ``Retry-After``, 400/401/403/406/415 held;
4. :mod:`.metrics` exposes the deadline figures (reports of a day are due by 08:00 Brasília
   the next day) and :mod:`.compliance` (``ofsre pcm report``) computes what the regulator will.

:mod:`.mock` is a local PCM speaking the documented protocol, used by the tests and the bench.
"""

from .store import ReportStore

__all__ = ["ReportStore"]
