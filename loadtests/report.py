"""The scaling report: ``report.json`` for machines, ``report.html`` (self-contained) for people.

The HTML page embeds its plots as base64 PNGs drawn with matplotlib (Agg, no display), so it
can be attached to a release ticket as one file: users, requests/s, p95 and replicas per
service over time, scale events marked, then the verdict table and the thresholds. When the
page has loaded, ``<body data-plots-loaded="N">`` says how many plots the browser decoded.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_report", "plot_png"]

PLOTS = ("users", "requests per second", "p95 latency", "replicas per service")


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def plot_png(kind: str, samples: Sequence[Mapping], events: Sequence[Mapping],
             rows: Sequence[Mapping]) -> str:
    """One plot (a name from :data:`PLOTS`) as a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min([r["t"] for r in rows] + [s["t"] for s in samples] or [0])
    fig, ax = plt.subplots(figsize=(9, 2.6))
    try:
        if kind == "users":
            ax.plot([r["t"] - t0 for r in rows], [r.get("users", 0) for r in rows], color="tab:blue")
            ax.set_ylabel("users")
        elif kind == "requests per second":
            ax.plot([r["t"] - t0 for r in rows], [r.get("rps", 0) for r in rows], color="tab:green",
                    label="req/s")
            ax.plot([r["t"] - t0 for r in rows], [r.get("fails_per_s", 0) for r in rows], color="tab:red",
                    label="failures/s")
            ax.set_ylabel("per second")
            ax.legend(loc="upper left", fontsize=8)
        elif kind == "p95 latency":
            pts = [(r["t"] - t0, r["p95_ms"]) for r in rows if r.get("p95_ms") is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color="tab:purple")
            ax.set_ylabel("p95 (ms, last 10 s)")
        else:
            names = sorted({n for s in samples for n in s.get("services", {})})
            for name in names:
                pts = [(s["t"] - t0,
                        s["services"][name].get("ready") or 0) for s in samples if name in s["services"]]
                ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=name)
            ax.set_ylabel("ready replicas")
            ax.legend(loc="upper left", fontsize=8, ncol=max(1, len(names)))
        for e in events:
            if e.get("reason") == "SuccessfulRescale" and e.get("t"):
                ax.axvline(e["t"] - t0, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("seconds (dotted lines: SuccessfulRescale events)")
        ax.set_title(kind)
        ax.grid(alpha=0.3)
        return _png(fig)
    finally:
        plt.close(fig)


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for row in rows:
        cells = "".join(f"<td>{html.escape('-' if v is None else str(v))}</td>" for v in row)
        out.append(f"<tr>{cells}</tr>")
    return "\n".join(out + ["</table>"])


def write_report(directory: str | Path, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``directory``; their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    samples, events, rows = report.get("samples", []), report.get("events", []), report.get("timeline", [])
    verdict = report.get("verdict", {})
    checks = [(c["service"], c["name"], {True: "pass", False: "FAIL", None: "info"}[c["passed"]], c["value"],
               c["bound"], c["detail"]) for c in verdict.get("checks", []) + report.get("gate", [])]
    thresholds = report.get("summary", {}).get("thresholds", {})
    routes = [(r["method"], r["route"], r["tier"], r["requests"], r["p95_ms"], r["limit_ms"],
               "ok" if r["ok"] else "OVER") for r in thresholds.get("routes", [])]
    imgs = "\n".join(f'<figure><img alt="{html.escape(k)}" '
                     f'src="data:image/png;base64,{plot_png(k, samples, events, rows)}"></figure>'
                     for k in PLOTS)
    disagreements = "".join(f"<li>{html.escape(d)}</li>" for d in report.get("views", {}).get("disagreements",
                                                                                              []))
    error_pct, budget_pct = (100 * thresholds.get(k, 0) for k in ("error_rate", "error_budget"))
    capacity, tpm = thresholds.get("capacity_answers", 0), thresholds.get("tpm_answers", 0)
    ok = report.get("passed")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ofsre scaling verdict: {'PASS' if ok else 'FAIL'}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.25em .5em;font-size:.9em}} .verdict{{font-size:1.6em;font-weight:bold;
color:{'#186a18' if ok else '#a01818'}}} figure{{margin:0}}</style></head>
<body data-plots-loaded="0">
<h1>ofsre scaling verdict</h1>
<p class="verdict" id="verdict">{'PASS' if ok else 'FAIL'}</p>
<p>target {html.escape(str(report.get('target')))} · suite {html.escape(str(report.get('suite')))} ·
{len(rows)} s of traffic · {report.get('summary', {}).get('requests', 0)} requests</p>
<ul>{''.join(f'<li>{html.escape(f)}</li>' for f in report.get('failed', []))}</ul>
{imgs}
<h2>Verdict</h2>
{_table(checks, ('service', 'check', 'result', 'value', 'bound', 'detail'))}
<h2>Thresholds (client view, catalog limits)</h2>
<p>error rate {error_pct:.2f} % (budget {budget_pct:.2f} %),
529 capacity answers {capacity}, justified 429 {tpm}</p>
{_table(routes, ('method', 'route', 'tier', 'requests', 'p95 ms', 'limit ms', ''))}
<h2>Client and server views</h2><ul>{disagreements or '<li>they agree</li>'}</ul>
<script>
window.addEventListener("load", function () {{
  var n = 0; document.querySelectorAll("img").forEach(function (i) {{ if (i.naturalWidth > 0) n++; }});
  document.body.setAttribute("data-plots-loaded", String(n));
}});
</script>
</body></html>
"""
    html_path.write_text(page)
    return json_path, html_path
