"""The README's table of variables is the declarations' table; every variable the readers use is declared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ofsre import _config_cli
from ofsre.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The five readers: each reads its OFSRE_* variables through ofsre.instrumentation.config.
READERS = ("instrumentation/_config.py", "exporters/_options.py", "platform/services/settings.py",
           "platform/queue/_config.py", "platform/runtime/config.py")
# Every module of the package and of the load tests: what it names is declared, and it reads no OFSRE_*
# variable by hand.
SOURCES = sorted(str(path.relative_to(ROOT))
                 for folder in ("instrumentation", "exporters", "platform", "cli", "loadtests")
                 for path in (ROOT / folder).rglob("*.py"))
# os.environ.get("OFSRE_X"), os.environ["OFSRE_X"], os.getenv("OFSRE_X"), env_str("OFSRE_X"),
# env.get("OFSRE_X")…
BY_HAND = re.compile(r"""(?:environ|getenv|env_str|env_flag|env)\s*(?:\.get)?\s*[(\[]\s*f?["']OFSRE_""")


def _block(text: str) -> str:
    begin = text.index(_config_cli.BEGIN) + len(_config_cli.BEGIN)
    return text[begin:text.index(_config_cli.END)].strip("\n") + "\n"


def test_the_readme_table_is_in_step_with_the_declarations():
    assert _block(README.read_text(encoding="utf-8")) == _config_cli.render(markdown=True), (
        f"README.md's table of OFSRE_* variables is out of step with the declarations: "
        f"regenerate it with `{_config_cli.REGENERATE}`")


def test_an_edited_table_is_noticed_and_write_restores_it(tmp_path, capsys):
    readme = tmp_path / "README.md"
    good = README.read_text(encoding="utf-8")
    readme.write_text(good.replace("| `OFSRE_MTLS` | `on` |", "| `OFSRE_MTLS` | `off` |"), encoding="utf-8")
    assert _block(readme.read_text(encoding="utf-8")) != _config_cli.render(markdown=True)
    assert main(["config", "vars", "--markdown", "--write", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == good
    assert main(["config", "vars", "--write", str(tmp_path / "missing.md")]) == 1
    (tmp_path / "plain.md").write_text("no markers here\n", encoding="utf-8")
    assert main(["config", "vars", "--write", str(tmp_path / "plain.md")]) == 1
    assert "no <!-- ofsre-vars:begin" in capsys.readouterr().err


def test_the_command_prints_every_declared_variable(capsys):
    assert main(["config", "vars", "--markdown"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| `OFSRE_")]
    names = [re.match(r"\| `(OFSRE_\w+)`", row).group(1) for row in rows]
    assert names == sorted(names) and len(names) == len(set(names)) == len(_config_cli.declared())
    assert main(["config", "vars"]) == 0
    assert "OFSRE_MTLS" in capsys.readouterr().out


@pytest.mark.parametrize("path", READERS)
def test_every_variable_a_reader_names_is_declared(path):
    declared = {var.name for var in _config_cli.declared()}
    # Every name the file mentions, in code or docstring (a family like ``OFSRE_QUEUE_*`` is not a name).
    text = (ROOT / path).read_text(encoding="utf-8")
    named = set(re.findall(r"\b(OFSRE_[A-Z0-9_]*[A-Z0-9])\b(?![*_])", text))
    assert named and named <= declared, f"{path} names undeclared variables: {sorted(named - declared)}"


@pytest.mark.parametrize("path", SOURCES)
def test_every_variable_a_module_names_is_declared_and_read_through_its_declaration(path):
    declared = {var.name for var in _config_cli.declared()}
    text = (ROOT / path).read_text(encoding="utf-8")
    named = set(re.findall(r"\b(OFSRE_[A-Z0-9_]*[A-Z0-9])\b(?![*_])", text))
    assert named <= declared, f"{path} names undeclared variables: {sorted(named - declared)}"
    by_hand = [line.strip() for line in text.splitlines() if BY_HAND.search(line)]
    assert not by_hand, f"{path} reads OFSRE_* variables by hand instead of through their Var: {by_hand}"


def test_the_by_hand_pattern_sees_the_usual_spellings():
    for line in ('os.environ.get("OFSRE_X", "")', "os.environ['OFSRE_X']", 'os.getenv("OFSRE_X")',
                 'env_str("OFSRE_X")', 'env.get("OFSRE_X")', 'env_flag("OFSRE_X")'):
        assert BY_HAND.search(line), line
    for line in ('os.environ.setdefault(SERVICE.name, service)', 'doc="`OFSRE_X` …"', 'X.from_env(environ)'):
        assert not BY_HAND.search(line), line


def test_every_declaration_says_who_reads_it_and_what_it_means():
    for var in _config_cli.declared():
        assert var.reader.strip() and var.doc.strip() and var.default_text(), var.name
