"""The distribution's shape: packages, extras, and no shadowing of the standard library."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
HEAVY = ("locust", "gevent", "grafanalib", "kubernetes")


def _run(code: str, cwd: Path = ROOT, python: str = sys.executable) -> str:
    out = subprocess.run([python, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_every_python_package_is_listed_in_pyproject():
    setuptools_cfg = PYPROJECT["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    mapping = setuptools_cfg["package-dir"]
    found = set()
    for pkg, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([pkg, *rel.parts]) if rel.parts else pkg)
    found = {p for p in found
             if not any(p.startswith(other + ".") and other not in listed for other in found)}
    assert found <= listed, ("packages missing from pyproject [tool.setuptools] packages: "
                             f"{sorted(found - listed)}")


def _folder(package: str) -> Path:
    """The source folder of a listed package, by pyproject's package-dir (the longest mapped prefix)."""
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    mapped = max((name for name in mapping if package == name or package.startswith(name + ".")), key=len)
    rest = package[len(mapped) + 1:]
    return ROOT / mapping[mapped] / Path(*rest.split(".")) if rest else ROOT / mapping[mapped]


def test_every_package_ships_a_py_typed_marker():
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["*"]
    missing = [p for p in packages if not (_folder(p) / "py.typed").is_file()]
    assert not missing, f"packages without py.typed: {missing}"


def _typecheck_tree():
    spec = importlib.util.spec_from_file_location("typecheck_tree", ROOT / "tools" / "typecheck_tree.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_typecheck_tree_spells_every_package_as_its_import_path(tmp_path):
    tree = _typecheck_tree()
    out = tmp_path / "tree"
    (out / "ofsre" / "gone").mkdir(parents=True)
    (out / "ofsre" / "stale.py").symlink_to(ROOT / "README.md")
    tree.sync(tree.wanted_links(tree.package_dirs(), out=out), out=out)
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        where = out.joinpath(*package.split("."))
        assert (where / "__init__.py").resolve() == (_folder(package) / "__init__.py").resolve(), package
    # Leaf packages are directory links, so a file added to the folder is seen without a rebuild.
    assert (out / "ofsre" / "instrumentation").is_symlink()
    assert not (out / "ofsre" / "platform").is_symlink()
    assert (out / "ofsre" / "platform" / "queue").is_symlink()
    assert not (out / "ofsre" / "gone").exists() and not (out / "ofsre" / "stale.py").is_symlink()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    tree.sync(tree.wanted_links(tree.package_dirs(), out=out), out=out)   # a second run changes nothing
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_platform_folder_does_not_shadow_the_standard_library():
    assert not (ROOT / "platform" / "__init__.py").exists()
    # From the repo root (cwd first on sys.path, as `python -m pytest` has it) the stdlib module wins.
    out = _run("import platform, sys; print(platform.__file__); print(platform.system())")
    path, system = out.split()
    stdlib = _run("import sysconfig; print(sysconfig.get_path('stdlib'))").strip()
    assert Path(path).resolve() == (Path(stdlib) / "platform.py").resolve(), path
    assert system == "Linux"
    for folder in ("instrumentation", "exporters", "dashboards", "alerts", "loadtests", "tests"):
        assert folder not in sys.stdlib_module_names


def test_instrumentation_import_pulls_no_heavy_dependency():
    out = _run("import sys, ofsre.instrumentation; print(' '.join(sorted(sys.modules)))")
    loaded = set(out.split())
    assert not [m for m in HEAVY if m in loaded]


def test_base_install_imports_instrumentation_without_extras(tmp_path):
    """A fresh venv with `pip install .` (no extras) imports and uses the instrumentation library."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", str(ROOT)], check=True, timeout=600)
    out = _run(
        "import sys, ofsre.instrumentation as i; from ofsre.instrumentation.catalog import load_catalog;"
        "print(len(load_catalog())); "
        "print(' '.join(m for m in ('locust','gevent','grafanalib','kubernetes','fastapi')"
        " if __import__('importlib.util').util.find_spec(m)))",
        cwd=tmp_path, python=py,
    )
    count, installed = (out.splitlines() + [""])[:2]
    assert int(count) > 50
    assert installed == "", f"base install pulled extras: {installed}"


def test_cli_help_and_version():
    out = subprocess.run([sys.executable, "-m", "ofsre", "--version"], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().startswith("ofsre ")
    out = subprocess.run([sys.executable, "-m", "ofsre", "--help"], capture_output=True, text=True,
                         check=True)
    assert "catalog" in out.stdout and "Open Finance" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "ofsre", "no-such-command"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
