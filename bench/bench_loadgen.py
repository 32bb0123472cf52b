"""Is the load generator ever the bottleneck? Requests/s per core of a suite user vs a bare one.

Both run in one Locust process (one core) against a trivial endpoint in another process (an
asyncio server answering a fixed JSON body with the request's ``x-fapi-interaction-id``):

* ``bare``  — a plain ``FastHttpUser`` doing ``self.client.get(path)`` with no wait;
* ``suite`` — the suite's open-data persona (:class:`ofsre.loadtests.journeys.OpenDataUser`) with
  no think time: the same GET plus everything a suite request does (a fresh interaction id,
  the catalog route name, the TPM ledger, ``catch_response``, the echo check, JSON parsing).

Figure: requests per CPU-second of the Locust process (``getrusage`` of the child), the
suite's against the bare one's. Target: ``suite / bare >= 0.5``. The machine is shared:
read ratios, not absolute numbers. Knobs: BENCH_DURATION (s per run, default 8),
BENCH_USERS (20), BENCH_ROUNDS (3, best kept). ``python bench/bench_loadgen.py`` runs it alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import wait_port

TARGET = 0.5
PATH = "/open-banking/opendata-accounts/v1/personal-accounts"
HERE = Path(__file__).resolve()

LOCUSTFILE = '''
import locust  # first: gevent patches the standard library
from locust import FastHttpUser, constant, task

from ofsre.loadtests import suite  # noqa: F401 - the summary file
from ofsre.loadtests.journeys import OpenDataUser


class Bare(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self):
        self.client.get("{path}")


class Suite(OpenDataUser):
    wait_time = constant(0)
'''.replace("{path}", PATH)


def _serve(port: int) -> None:
    """The trivial endpoint: keep-alive HTTP/1.1, echoes the interaction id."""
    body = b'{"data":[],"links":{},"meta":{"totalRecords":0,"totalPages":0}}'

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, b""

        def data_received(self, data):
            self.buf += data
            while b"\r\n\r\n" in self.buf:
                head, self.buf = self.buf.split(b"\r\n\r\n", 1)
                iid = b""
                for line in head.split(b"\r\n"):
                    if line[:22].lower() == b"x-fapi-interaction-id:":
                        iid = line[22:].strip()
                self.t.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\nx-fapi-interaction-id: " + iid
                             + b"\r\n\r\n" + body)

    async def main():
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one(locustfile: Path, user: str, host: str, duration: float, users: int,
         workdir: Path) -> tuple[float, float]:
    summary = workdir / f"{user}.json"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "locust", "-f", str(locustfile), user, "--headless", "--host", host,
                    "-u", str(users), "-r", str(users), "-t", f"{duration:g}s", "--only-summary",
                    "--loglevel", "ERROR",
                    "--no-thresholds", "--progress-interval", "0", "--summary-json", str(summary)],
                   check=True, capture_output=True, timeout=duration + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = json.loads(summary.read_text())
    if result["failures"]:
        raise RuntimeError(f"{user}: {result['failures']} failed requests: {result['errors'][:2]}")
    if not result["requests"]:
        return 0.0, 0.0  # a run that made no request (a starved machine): the other rounds decide
    wall = max(1e-3, (result.get("end") or 0) - (result.get("start") or 0)) or duration
    return result["requests"] / cpu, result["requests"] / wall


def run() -> str:
    duration = float(os.environ.get("BENCH_DURATION", "8"))
    users = int(os.environ.get("BENCH_USERS", "20"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    port = _free_port()
    server = subprocess.Popen([sys.executable, str(HERE), "--serve", str(port)])
    try:
        wait_port(port, "the trivial endpoint did not start", timeout=15)
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            locustfile = workdir / "loadgen_locustfile.py"
            locustfile.write_text(LOCUSTFILE)
            best: dict[str, tuple[float, float]] = {}
            for r in range(rounds):
                for user in ("Bare", "Suite"):  # interleaved, best of each kept
                    print(f"  round {r + 1}/{rounds}: {user} for {duration:g} s …", file=sys.stderr,
                          flush=True)
                    per_cpu, per_s = _one(locustfile, user, f"http://127.0.0.1:{port}", duration, users,
                                          workdir)
                    if user not in best or per_cpu > best[user][0]:
                        best[user] = (per_cpu, per_s)
    finally:
        server.terminate()
        server.wait(10)
    bare, suite = best["Bare"], best["Suite"]
    if not bare[0] or not suite[0]:
        raise RuntimeError("a load generator made no request in any round")
    ratio = suite[0] / bare[0]
    lines = [f"{'user':<8} {'req/s per core':>15} {'req/s':>9}",
             f"{'bare':<8} {bare[0]:>15.0f} {bare[1]:>9.0f}",
             f"{'suite':<8} {suite[0]:>15.0f} {suite[1]:>9.0f}",
             f"suite / bare = {ratio:.2f} per core "
             f"(target >= {TARGET}: {'met' if ratio >= TARGET else 'MISSED'})",
             f"({users} users, {duration:g} s per run, best of {rounds}; one Locust process, "
             "trivial endpoint in another)"]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        _serve(int(sys.argv[2]))
    else:
        print(run())
