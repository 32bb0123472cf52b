"""The demo's scaling phase calls the verifier with options it accepts, on a suite that exists,
with short HPA windows matching the demo platform's (the phase itself runs in test_verify_e2e.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ofsre.loadtests.cli import locustfile
from ofsre.platform.runtime import demo


def test_the_demo_scaling_command_parses_and_matches_the_demo_platform(tmp_path):
    cmd = demo.scaling_command(tmp_path / "var", tmp_path / "report")
    assert cmd[:4] == [sys.executable, "-m", "ofsre", "loadtest"]
    from ofsre.cli import build_parser

    args = build_parser("loadtest").parse_args(cmd[3:])
    assert args.target == "local" and args.data_dir == tmp_path / "var" and args.expect_scale == "gateway"
    assert locustfile(args.suite).is_file()
    cfg = demo._demo_config(tmp_path, scaling=True)
    assert args.sync_period == cfg.controller.sync_period
    assert args.scale_down_window == cfg.scale_down.stabilization_window_seconds
    assert cfg.gateway.autoscale and cfg.gateway.max_replicas == demo.DEMO_MAX_REPLICAS
    # The suite's own options (after --) are ones the locustfile knows: Locust refuses unknown ones.
    suite_args = [a for a in args.suite_args if a != "--"]
    probe = ("import json, sys, runpy, locust\n"
             "from locust import argument_parser\n"
             "runpy.run_path(sys.argv[1])\n"
             "opts = argument_parser.get_parser().parse_args(['-f', sys.argv[1], *sys.argv[2:]])\n"
             "print(json.dumps({'base_users': opts.base_users, 'spike_factor': opts.spike_factor}))\n")
    out = subprocess.run([sys.executable, "-c", probe, str(locustfile(args.suite)), *suite_args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]  # argparse exits 2 on an option the suite does not know
    assert '"spike_factor": 5.0' in out.stdout
    assert Path(locustfile("spike")).name == "spike.py"
