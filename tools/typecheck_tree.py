"""Build ``.typecheck/ofsre/``: the ``ofsre`` package as type checkers and editors can read it.

pyproject's ``package-dir`` maps the card's folders into one ``ofsre`` namespace
(``instrumentation/`` is ``ofsre.instrumentation``, ``platform/services/`` is
``ofsre.platform``…), so no folder is named ``ofsre`` and the editable install finds the
modules through an import hook, which mypy, pyright and editors do not run. This script
writes a tree of symlinks that spells the mapping out, read from pyproject.toml each time:

* a package with no mapped subpackage is one **directory** symlink to its folder
  (``.typecheck/ofsre/instrumentation -> ../../instrumentation``), so files added there
  appear at once, with no reinstall and no rebuild;
* a package that has mapped subpackages (``ofsre`` from ``cli/``, ``ofsre.platform`` from
  ``platform/services/``) is a real directory holding one symlink per entry of its folder,
  plus its mapped subpackages (``ofsre/platform/queue -> platform/queue``).

Run from anywhere: ``python tools/typecheck_tree.py`` (``make lint`` runs it before mypy).
The tree is brought in step in place (missing links made, stale ones removed), so two runs at
once, or an editor reading it meanwhile, never see it half gone.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".typecheck"
SKIP = {"__pycache__"}


def package_dirs(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """pyproject's ``[tool.setuptools] package-dir``: package name -> folder (relative to the root)."""
    return dict(tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"])


def wanted_links(mapping: dict[str, str], root: Path = ROOT, out: Path = OUT) -> dict[Path, Path]:
    """Every symlink of the tree: its path under ``out`` -> the file or folder it points at."""
    links: dict[Path, Path] = {}
    for package, folder in mapping.items():
        where = out.joinpath(*package.split("."))
        source = root / folder
        children = {name[len(package) + 1:].split(".")[0] for name in mapping
                    if name.startswith(package + ".")}
        if not children:
            links[where] = source
            continue
        for entry in sorted(source.iterdir()):
            if entry.name not in SKIP and entry.name not in children:  # a mapped subpackage wins
                links[where / entry.name] = entry
    return links


def sync(links: dict[Path, Path], out: Path = OUT) -> None:
    """Make the tree under ``out`` hold exactly ``links`` (relative symlinks), changing only what differs."""
    for path in sorted(out.rglob("*"), key=lambda p: len(p.parts), reverse=True) if out.exists() else ():
        if path.is_symlink():
            if path not in links or Path(os.readlink(path)) != _relative(links[path], path):
                path.unlink(missing_ok=True)
        elif path.is_dir() and not any(link.is_relative_to(path) for link in links):
            _rmdir(path)
    for path, target in links.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_symlink():
            try:
                path.symlink_to(_relative(target, path), target_is_directory=target.is_dir())
            except FileExistsError:  # another run made it meanwhile
                pass


def _relative(target: Path, link: Path) -> Path:
    return Path(os.path.relpath(target, link.parent))


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:  # not empty (something else put a file there) or already gone
        pass


def main() -> int:
    sync(wanted_links(package_dirs()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
