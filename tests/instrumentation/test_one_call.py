"""One call does everything: a service that only calls ``instrument_app`` (or ``instrument_worker``)
logs JSON with LGPD redaction and trace/interaction correlation, uvicorn's own lines included.

Each app here is what a new user writes without reading any README: no ``configure_logging``,
no ``log_config``. It runs under a real uvicorn process on loopback and its stdout is read.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest

CPF, CPF_BARE = "123.456.789-09", "12345678909"
CNPJ = "11.222.333/0001-81"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl"
BEARER = "Bearer s3cr3tT0kenValue42"
SECRETS = (CPF, CPF_BARE, CNPJ, "11222333000181", JWT, "s3cr3tT0kenValue42")
ROUTE = "/open-banking/accounts/v2/accounts/{accountId}/balances"
PATH = ROUTE.replace("{accountId}", "acc-1")

HANDLER_BODY = f'''
    log.info("cliente %s empresa %s pediu saldo", "{CPF}", "{CNPJ}")
    log.warning("auth header was Authorization: {BEARER} and id_token {JWT}")
'''

FASTAPI_APP = f'''
import logging
from fastapi import FastAPI
from ofsre.instrumentation import instrument_app

app = FastAPI()
log = logging.getLogger("newuser")

@app.get("{ROUTE}")
async def balances(accountId: str):
    {HANDLER_BODY.strip()}
    return {{"accountId": accountId}}

instrument_app(app, service="newuser")
'''

PLAIN_ASGI_APP = f'''
import logging, sys
import uvicorn
from ofsre.instrumentation import instrument_app

log = logging.getLogger("newuser")

async def plain(scope, receive, send):
    if scope["type"] != "http":
        return
    {HANDLER_BODY.strip()}
    await send({{"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]}})
    await send({{"type": "http.response.body", "body": b"ok"}})

app = instrument_app(plain, service="newuser")

if __name__ == "__main__":   # uvicorn.run configures its loggers after instrument_app ran
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), lifespan="off")
'''

WORKER = f'''
import logging
from opentelemetry import trace
from ofsre.instrumentation.context import use_interaction_id
from ofsre.instrumentation.worker import instrument_worker

instrument_worker("jobs")
log = logging.getLogger("jobs.pix")
with trace.get_tracer("jobs").start_as_current_span("settle"), use_interaction_id("{{iid}}"):
    log.info("settling for %s / %s", "{CPF}", "{CNPJ}")
    log.warning("token {BEARER}")
'''


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OFSRE_", "PROMETHEUS_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_and_call(tmp_path: Path, source: str, command: list[str],
                    port: int) -> tuple[list[dict], str, str]:
    (tmp_path / "newuser.py").write_text(textwrap.dedent(source))
    proc = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    iid = str(uuid.uuid4())
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}{PATH}?cpf={CPF_BARE}",
                                     headers={"x-fapi-interaction-id": iid}, timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.headers["x-fapi-interaction-id"] == iid
    finally:
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=30)
    return [json.loads(line) for line in stdout.splitlines() if line.strip()], stdout + stderr, iid


def _assert_correlated_and_redacted(lines: list[dict], everything: str, iid: str,
                                    logger: str = "newuser") -> None:
    mine = [line for line in lines if line["logger"] == logger]
    assert len(mine) == 2, lines
    trace_ids = {line["trace_id"] for line in mine}
    assert len(trace_ids) == 1 and len(trace_ids.pop()) == 32
    assert {line["interaction_id"] for line in mine} == {iid}
    assert "[CPF]" in mine[0]["message"] and "[CNPJ]" in mine[0]["message"]
    for secret in SECRETS:
        assert secret not in everything, secret


def test_a_fastapi_app_under_the_uvicorn_cli_logs_json_correlated_and_redacted(tmp_path):
    port = _free_port()
    lines, everything, iid = _serve_and_call(
        tmp_path, FASTAPI_APP, [sys.executable, "-m", "uvicorn", "newuser:app", "--host", "127.0.0.1",
                                "--port", str(port)], port)
    _assert_correlated_and_redacted(lines, everything, iid)
    # uvicorn's own loggers come through the same JSON handler (every stdout line parsed above).
    loggers = {line["logger"] for line in lines}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers, loggers
    [access] = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert access["interaction_id"] == iid and access["trace_id"] and "[CPF]" in access["message"]
    assert all(line["service"] == "newuser" for line in lines)


def test_uvicorn_no_access_log_stays_off(tmp_path):
    # `--no-access-log` (uvicorn's access_log=False) leaves uvicorn.access without a handler and not
    # propagating: adopting uvicorn's loggers must not turn the access log back on (it did: a line per
    # request, and uvicorn building the line's arguments on every response).
    port = _free_port()
    lines, everything, iid = _serve_and_call(
        tmp_path, FASTAPI_APP, [sys.executable, "-m", "uvicorn", "newuser:app", "--host", "127.0.0.1",
                                "--port", str(port), "--no-access-log"], port)
    _assert_correlated_and_redacted(lines, everything, iid)
    loggers = {line["logger"] for line in lines}
    assert "uvicorn.error" in loggers and "uvicorn.access" not in loggers, loggers


def test_a_plain_asgi_app_under_uvicorn_run_logs_json_correlated_and_redacted(tmp_path):
    port = _free_port()
    lines, everything, iid = _serve_and_call(tmp_path, PLAIN_ASGI_APP,
                                             [sys.executable, "newuser.py", str(port)], port)
    _assert_correlated_and_redacted(lines, everything, iid)
    assert "uvicorn.access" in {line["logger"] for line in lines}


def test_a_worker_without_http_gets_the_same_logs(tmp_path):
    iid = str(uuid.uuid4())
    (tmp_path / "worker.py").write_text(textwrap.dedent(WORKER.replace("{iid}", iid)))
    proc = subprocess.run([sys.executable, "worker.py"], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    _assert_correlated_and_redacted(lines, proc.stdout + proc.stderr, iid, logger="jobs.pix")
    assert {line["service"] for line in lines} == {"jobs"}


@pytest.mark.parametrize("configured_first", [True, False])
def test_logs_false_or_an_ofsre_configuration_is_left_alone(configured_first, tmp_path):
    script = textwrap.dedent(f'''
        import io, logging, sys
        from fastapi import FastAPI
        from ofsre.instrumentation import configure_logging, instrument_app
        mine = io.StringIO()
        if {configured_first}:
            configure_logging("svc", stream=mine, level="WARNING")
            instrument_app(FastAPI(), service="svc")
        else:
            instrument_app(FastAPI(), service="svc", logs=False)
        root = logging.getLogger()
        print(len(root.handlers), logging.getLevelName(root.level),
              root.handlers and root.handlers[0].stream is mine)
    ''')
    out = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    expected = "1 WARNING True" if configured_first else "0 WARNING []"
    assert out.stdout.strip() == expected


def test_the_middleware_class_used_directly_makes_the_same_promise():
    script = textwrap.dedent('''
        import logging
        from ofsre.instrumentation import OfsreMiddleware
        from ofsre.instrumentation.logs import logging_configured

        async def app(scope, receive, send):
            pass

        OfsreMiddleware(app, "svc")
        logging.getLogger("x").info("cpf 123.456.789-09")
        print(logging_configured())
    ''')
    out = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    line, configured = out.stdout.splitlines()
    assert json.loads(line)["message"] == "cpf [CPF]" and configured == "True"
