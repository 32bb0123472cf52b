"""The one configuration reader: argument, then ``OFSRE_*``, then default; one vocabulary of kinds."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

from ofsre.instrumentation import config
from ofsre.instrumentation.config import (
    BOOLEAN,
    PATH,
    TEXT,
    UNSET,
    Registry,
    Var,
    choice,
    duration,
    integer,
    items,
    markdown_table,
    number,
    parsed,
    size,
)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test sees its own "already logged" set (the reader logs a bad value once per process)."""
    monkeypatch.setattr(config, "_WARNED", set())


def var(kind, default, **more) -> Var:
    return Var("OFSRE_TEST_VAR", kind, default, reader="tests", doc="a test variable", registry=None,
               logger="ofsre.test", **more)


@pytest.mark.parametrize("word", ["1", "true", "yes", "on", "TRUE", " Yes ", "On"])
def test_true_words(word):
    assert var(BOOLEAN, False).from_env({"OFSRE_TEST_VAR": word}) is True


@pytest.mark.parametrize("word", ["0", "false", "no", "off", "FALSE", " No ", "Off"])
def test_false_words(word):
    assert var(BOOLEAN, True).from_env({"OFSRE_TEST_VAR": word}) is False


def test_blank_or_unset_is_the_default():
    for env in ({}, {"OFSRE_TEST_VAR": ""}, {"OFSRE_TEST_VAR": "   "}):
        assert var(BOOLEAN, True).from_env(env) is True
        assert var(TEXT, "d").from_env(env) == "d"
        assert var(TEXT, "d").from_env(env, default=UNSET) is UNSET


def test_the_argument_wins_and_the_environment_is_read_only_without_it(monkeypatch):
    v = var(integer(0), 5)
    monkeypatch.setenv("OFSRE_TEST_VAR", "7")
    assert v.get(3) == 3 and v.get(None) == 7 and v.get() == 7
    monkeypatch.delenv("OFSRE_TEST_VAR")
    assert v.get() == 5


def test_other_names_are_tried_in_order():
    v = var(TEXT, "", also=("OTHER_A", "OTHER_B"))
    assert v.from_env({"OTHER_B": "b"}) == "b"
    assert v.from_env({"OTHER_A": "a", "OTHER_B": "b"}) == "a"
    assert v.from_env({"OFSRE_TEST_VAR": "x", "OTHER_A": "a"}) == "x"


def test_durations_are_finite_seconds():
    v = var(duration(0.1), 10.0)
    assert v.from_env({"OFSRE_TEST_VAR": "2.5"}) == 2.5
    assert v.from_env({"OFSRE_TEST_VAR": "0"}) == 10.0       # below the minimum: the default
    assert v.from_env({"OFSRE_TEST_VAR": "inf"}) == 10.0     # not finite
    assert v.from_env({"OFSRE_TEST_VAR": "nan"}) == 10.0
    assert v.from_env({"OFSRE_TEST_VAR": "2s"}) == 10.0      # no reader accepted units: none do now
    assert v.get(1) == 1.0


def test_an_unlimited_duration_says_none_for_forever():
    v = var(duration(unlimited=True), 300.0)
    for word in ("none", "inf", "Forever", "never"):
        assert v.from_env({"OFSRE_TEST_VAR": word}) is None
    assert v.get(math.inf) is None and v.get(60) == 60.0
    with pytest.raises(ValueError):
        v.get(-1)


def test_sizes_are_whole_bytes():
    v = var(size(1024), 16384)
    assert v.from_env({"OFSRE_TEST_VAR": "4096"}) == 4096
    for bad in ("1MB", "1.5", "512", "-1"):
        assert v.from_env({"OFSRE_TEST_VAR": bad}) == 16384
    assert v.get(2048) == 2048 and v.get(2048.0) == 2048
    with pytest.raises(ValueError, match="whole number"):
        v.get(2048.5)


def test_numbers_choices_lists_paths_and_parsed_values():
    assert var(number(0, 1), 0.0).from_env({"OFSRE_TEST_VAR": "0.25"}) == 0.25
    assert var(number(0, 1), 0.0).from_env({"OFSRE_TEST_VAR": "1.5"}) == 0.0
    assert var(choice("a", "b"), "a").from_env({"OFSRE_TEST_VAR": " B "}) == "b"
    assert var(items(int), ()).from_env({"OFSRE_TEST_VAR": "1, 2,,3"}) == (1, 2, 3)
    assert var(PATH, None).from_env({"OFSRE_TEST_VAR": "/tmp/x"}) == Path("/tmp/x")
    assert var(parsed(lambda t: t.upper(), "shout"), "").from_env({"OFSRE_TEST_VAR": "hi"}) == "HI"


def test_a_malformed_value_is_logged_once_and_the_default_used(caplog):
    v = var(integer(1), 8)
    with caplog.at_level(logging.WARNING, logger="ofsre.test"):
        assert [v.from_env({"OFSRE_TEST_VAR": "lots"}) for _ in range(3)] == [8, 8, 8]
        assert v.from_env({"OFSRE_TEST_VAR": "0"}) == 8  # another value: logged too
    messages = [r.getMessage() for r in caplog.records if r.name == "ofsre.test"]
    assert len(messages) == 2
    assert "OFSRE_TEST_VAR='lots'" in messages[0] and "using the default 8" in messages[0]
    assert "must be >= 1" in messages[1]


def test_a_malformed_boolean_is_logged_and_the_default_kept(caplog):
    with caplog.at_level(logging.WARNING, logger="ofsre.test"):
        assert var(BOOLEAN, True).from_env({"OFSRE_TEST_VAR": "of"}) is True
    assert "OFSRE_TEST_VAR='of'" in caplog.text


@pytest.mark.parametrize("kind, bad, reason", [
    (integer(1), 0, "must be >= 1"),
    (integer(), "many", "invalid literal"),
    (integer(), True, "whole number"),
    (number(0, 1), 2, "must be <= 1"),
    (duration(), float("nan"), "finite"),
    (BOOLEAN, "maybe", "1/true/yes/on"),
    (BOOLEAN, 2, "boolean"),
    (choice("a", "b"), "c", "one of a, b"),
    (TEXT, 5, "string"),
])
def test_a_bad_argument_raises_a_clear_value_error(kind, bad, reason):
    v = var(kind, None, argument="knob")
    with pytest.raises(ValueError, match=reason) as info:
        v.get(bad)
    assert str(info.value).startswith(f"knob={bad!r} is not valid")


def test_a_bad_argument_without_an_argument_name_names_the_variable():
    with pytest.raises(ValueError, match=r"^OFSRE_TEST_VAR=-1 is not valid"):
        var(duration(), 1.0).get(-1)


def test_declarations_are_checked_and_registered_once():
    registry = Registry()
    first = Var("OFSRE_ONE", TEXT, "", reader="a", doc="one", registry=registry)
    Var("OFSRE_ONE", TEXT, "", reader="a", doc="one", registry=registry)  # the same again: a reload
    assert [v.name for v in registry] == ["OFSRE_ONE"] and registry.get("OFSRE_ONE") == first
    with pytest.raises(ValueError, match="already declared"):
        Var("OFSRE_ONE", TEXT, "", reader="b", doc="another", registry=registry)
    with pytest.raises(ValueError, match="OFSRE_"):
        Var("LOWER_case", TEXT, "", reader="a", doc="x", registry=None)
    with pytest.raises(ValueError, match="reader"):
        Var("OFSRE_TWO", TEXT, "", reader="", doc="x", registry=None)


def test_the_markdown_table_has_one_row_per_variable_sorted_by_name():
    table = markdown_table([
        Var("OFSRE_B", BOOLEAN, True, reader="gateway", doc="b | pipe", registry=None),
        Var("OFSRE_A", size(), 1024, reader="exporters", argument="a_bytes", doc="a", also=("OTHER",),
            registry=None),
        Var("OFSRE_C", PATH, None, reader="x", doc="c", shown="bundled", registry=None),
    ])
    assert table.splitlines() == [
        "| Variable | Default | Read by | Meaning |",
        "|---|---|---|---|",
        "| `OFSRE_A` (then `OTHER`) | `1024` | exporters; argument `a_bytes=` | a |",
        "| `OFSRE_B` | `on` | gateway | b \\| pipe |",
        "| `OFSRE_C` | bundled | x | c |",
    ]


def test_env_flag_and_env_str_use_the_same_vocabulary(monkeypatch):
    from ofsre.instrumentation._config import env_flag, env_str
    monkeypatch.setenv("OFSRE_TEST_FLAG", "no")
    monkeypatch.setenv("OFSRE_TEST_TEXT", "  x  ")
    assert env_flag("OFSRE_TEST_FLAG", True) is False and env_str("OFSRE_TEST_TEXT") == "x"
    monkeypatch.setenv("OFSRE_TEST_FLAG", "maybe")
    assert env_flag("OFSRE_TEST_FLAG", True) is True
