"""The README stays true: its example runs when pasted into a new file, its commands exist."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_instrument_your_service_example_runs_under_uvicorn(tmp_path):
    code = re.search(r"## Instrument your service\n\n```python\n(.*?)```", README, re.S).group(1)
    assert len(code.strip().splitlines()) <= 14
    (tmp_path / "app.py").write_text(code)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app:app", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                response = httpx.get(f"{base}/open-banking/consents/v3/consents/abc", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response.status_code == 200
        assert len(response.headers["x-fapi-interaction-id"]) == 36
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert ('ofsre_http_server_requests_total{api="consents",method="GET",'
                'route="/open-banking/consents/v3/consents/{consentId}",service="consents",status="200",'
                'tier="alta"} 1.0') in metrics
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert b'"service":"consents"' in out  # JSON logs from configure_logging


def test_every_make_target_and_ofsre_command_the_readme_shows_exists():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make (\w+)`", README)) | set(re.findall(r"^make (\w+)", README, re.M)):
        assert re.search(rf"^{target}:", makefile,
                         re.M), f"README shows `make {target}`, the Makefile has no such target"
    from ofsre.cli import COMMANDS
    for command in set(re.findall(r"`ofsre (\w+)", README)):
        assert command in COMMANDS, f"README shows `ofsre {command}`, the CLI has no such command"
