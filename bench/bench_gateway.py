"""What the embedded gateway costs: requests/s to accounts through the gateway vs. directly.

Starts, on 127.0.0.1 with free ports, the real processes (``python -m ofsre.platform.run``):
accounts, consents (to create the consent) and the gateway (mTLS off, TPS limit out of the
way), creates and authorises one consent, then drives ``GET /open-banking/accounts/v2/accounts``
with ``wrk`` (or, when wrk is missing, an in-process httpx closed loop), alternating direct and
through-the-gateway rounds so both variants see the same machine. The table gives requests/s and
latency percentiles of each variant (median of the rounds) and the gateway's cost,
``1 - rps(gateway)/rps(direct)``; the goal is at most 25 %.

Knobs (environment): ``BENCH_DURATION`` seconds per round (default 5), ``BENCH_ROUNDS`` (2),
``BENCH_CONCURRENCY`` clients (32), ``BENCH_DATABASE_URL`` (default: a SQLite file in a temp dir;
e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``).

``python bench/bench_gateway.py`` runs it alone; ``python bench/run.py gateway`` through the runner.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from ofsre.platform.guard import GATEWAY_SECRET_HEADER

PATH = "/open-banking/accounts/v2/accounts"
GOAL = 0.25  # the gateway may cost at most this fraction of the direct throughput


def _env_number(name: str, default, kind=float):
    try:
        return kind(os.environ.get(name, default))
    except ValueError:
        return default


def _start(name: str, env: dict[str, str], workdir: Path) -> tuple[subprocess.Popen, str]:
    port_file = workdir / f"{name}.port"
    proc = subprocess.Popen([sys.executable, "-m", "ofsre.platform.run", name, "--port", "0",
                             "--port-file", str(port_file), "--log-level", "warning"],
                            env={**env, "OFSRE_SERVICE": name}, cwd=workdir,
                            stdout=(workdir / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{name} did not start: {(workdir / f'{name}.log').read_text()[-2000:]}")
        time.sleep(0.05)
    return proc, f"http://127.0.0.1:{int(port_file.read_text())}"


def _wrk(url: str, headers: dict[str, str], seconds: float, concurrency: int) -> dict:
    """One round with wrk (C, one thread): the load generator costs little CPU next to the servers."""
    args = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(args + [url + PATH], capture_output=True, text=True, check=True,
                         timeout=seconds + 60).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def latency_ms(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "errors": int(errors.group(1)) if errors else 0, "p50": latency_ms("50"), "p99": latency_ms("99")}


async def _httpx_round(url: str, headers: dict[str, str], seconds: float, concurrency: int) -> dict:
    """One round with an in-process httpx closed loop (when wrk is not installed; heavier on the CPU)."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        async def loop() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                response = await client.get(PATH)
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1,
                             int(q * len(latencies)))] * 1000 if latencies else float("nan")

    return {"rps": len(latencies) / elapsed, "errors": errors, "p50": pct(0.5), "p99": pct(0.99)}


def _round(url: str, headers: dict[str, str], seconds: float, concurrency: int) -> dict:
    if shutil.which("wrk"):
        return _wrk(url, headers, seconds, concurrency)
    return asyncio.run(_httpx_round(url, headers, seconds, concurrency))


def _cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    times = {name: psutil.Process(pid).cpu_times() for name, pid in pids.items()}
    return {name: t.user + t.system for name, t in times.items()}


def _measure(direct: str, gateway: str, headers: dict[str, str],
             pids: dict[str, int]) -> dict[str, list[dict]]:
    seconds = _env_number("BENCH_DURATION", 5.0)
    rounds = _env_number("BENCH_ROUNDS", 2, int)
    concurrency = _env_number("BENCH_CONCURRENCY", 32, int)
    _round(direct, headers, 1.0, concurrency)   # warm-up: connections, caches, lazy imports
    _round(gateway, headers, 1.0, concurrency)
    results: dict[str, list[dict]] = {"direct": [], "gateway": []}
    for _ in range(rounds):
        for variant, url in (("direct", direct), ("gateway", gateway)):
            print(f"bench_gateway: {variant} round ({seconds:g} s)", file=sys.stderr, flush=True)
            before = _cpu_seconds(pids)
            result = _round(url, headers, seconds, concurrency)
            after = _cpu_seconds(pids)
            requests = max(1.0, result["rps"] * seconds)
            for name in pids:  # CPU time each server spent per request of this round
                result[f"cpu_{name}"] = (after[name] - before[name]) / requests * 1000
            results[variant].append(result)
    return results


def _consent(consents_url: str, secret: str) -> str:
    from ofsre.platform.runtime.simulation import SimulatedBank

    body = {"data": {"loggedUser": {"document": {"identification": "12345678901", "rel": "CPF"}},
                     "permissions": ["ACCOUNTS_READ", "RESOURCES_READ"]}}
    with httpx.Client(base_url=consents_url, timeout=30, headers={GATEWAY_SECRET_HEADER: secret}) as http:
        cid = http.post("/open-banking/consents/v3/consents", json=body).json()["data"]["consentId"]
    SimulatedBank({"consents": [consents_url]}, secret).decide("consents", cid).raise_for_status()
    return cid


def _unlimited_catalog(directory: Path) -> Path:
    from ofsre.instrumentation.catalog import DEFAULT_PATH, load_catalog

    path = directory / "catalog.toml"
    text = DEFAULT_PATH.read_text().replace("[tiers.baixa]\np95_ms = 4000\ntpm = 1000",
                                            "[tiers.baixa]\np95_ms = 4000\ntpm = 1000000000")
    # One consent serves the whole run: lift the monthly operational limits (423) the same way.
    text = re.sub(r"(?m)^monthly_limit = \d+", "monthly_limit = 1000000000", text)
    path.write_text(text)
    catalog = load_catalog(path)
    endpoint = catalog.lookup("GET", PATH)
    if endpoint.tpm != 1_000_000_000 or endpoint.tier.monthly_limit != 1_000_000_000:
        raise RuntimeError("could not lift the baixa tier's TPM and monthly limit: the catalog changed shape")
    return path


def _table(results: dict[str, list[dict]]) -> str:
    keys = ("rps", "p50", "p99", "cpu_accounts", "cpu_gateway")
    median = {v: {k: statistics.median(r[k] for r in rounds) for k in keys} for v, rounds in results.items()}
    generator = ("wrk -t1" if shutil.which("wrk")
                 else "python httpx (install wrk for a lighter load generator)")
    lines = [f"load generator: {generator}; median of {len(results['direct'])} rounds per variant",
             f"{'variant':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
             f"{'accounts CPU ms/req':>20} {'gateway CPU ms/req':>19}"]
    for variant, m in median.items():
        errors = sum(r["errors"] for r in results[variant])
        lines.append(f"{variant:10} {m['rps']:9.0f} {m['p50']:8.1f} {m['p99']:8.1f} {errors:7d} "
                     f"{m['cpu_accounts']:20.2f} {m['cpu_gateway']:19.2f}")
    cost = 1 - median["gateway"]["rps"] / median["direct"]["rps"]
    verdict = "met" if cost <= GOAL else "MISSED"
    lines.append(f"gateway/direct throughput ratio {1 - cost:.2f}: the gateway costs {cost:.0%} "
                 f"(target <= {GOAL:.0%}: {verdict})")
    return "\n".join(lines) + "\n"


def run() -> str:
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        workdir = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OFSRE_", "OTEL_"))}
        secret = secrets.token_urlsafe(24)
        env.update({"OFSRE_DATA_DIR": str(workdir), "OFSRE_LOG_LEVEL": "WARNING", "OFSRE_MTLS": "off",
                    "OFSRE_GATEWAY_TPS_LIMIT": "1000000", "OTEL_TRACES_EXPORTER": "none",
                    "OFSRE_GATEWAY_SECRET": secret, "OFSRE_SIMULATION_ROUTES": "on"})
        # One load generator is one origin: the baixa tier's 1,000 TPM would refuse most of the run.
        # A catalog copy lifts it, so the TPM check still runs on every request, with a limit never hit.
        env["OFSRE_CATALOG"] = str(_unlimited_catalog(workdir))
        if os.environ.get("BENCH_DATABASE_URL"):
            env["OFSRE_DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
        subprocess.run([sys.executable, "-m", "ofsre.platform.run", "migrate"], env=env, cwd=workdir,
                       check=True, capture_output=True, timeout=120)
        processes = []
        try:
            consents_proc, consents_url = _start("consents", env, workdir)
            processes.append(consents_proc)
            accounts_proc, accounts_url = _start("accounts", env, workdir)
            processes.append(accounts_proc)
            upstreams = json.dumps({"accounts": [accounts_url], "consents": [consents_url]})
            gateway_proc, gateway_url = _start("gateway", {**env, "OFSRE_UPSTREAMS": upstreams}, workdir)
            processes.append(gateway_proc)
            # "direct" calls accounts as the gateway does: with the gateway secret.
            headers = {"authorization": f"Bearer consent:{_consent(consents_url, secret)}",
                       GATEWAY_SECRET_HEADER: secret}
            results = _measure(accounts_url, gateway_url, headers,
                               {"accounts": accounts_proc.pid, "gateway": gateway_proc.pid})
        finally:
            for proc in processes:
                proc.send_signal(signal.SIGTERM)
            for proc in processes:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        return _table(results)


if __name__ == "__main__":
    print(run())
