"""Untrusted sizes (issue 21, item 9): input that is small to write but huge to expand,
build or echo is refused quickly, with a short one-line message, before anything is built."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from study.cli import main
from study.config import MAX_ALIAS_NODES, SHOWN_CHARS, load_yaml_text
from study.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "search_spaces" / "quickstart.yaml")
# "billion laughs": each level repeats the one above 9 times; 9**7 leaves at depth 7
BOMB_LEVELS = "".join(
    f"{level}: &{level} [{', '.join([f'*{above}' if above else 'lol'] * 9)}]\n"
    for above, level in zip(["", "a", "b", "c", "d", "e", "f"], "abcdefg")
)


def refused(argv: list[str], capsys) -> tuple[str, float]:
    """Run the CLI; the one-line message of its refusal (exit 2) and the seconds it took."""
    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert (code, out, len(lines)) == (2, "", 1), err[:2000]
    assert lines[0].startswith("oodstudy: ") and "Traceback" not in err
    return lines[0], seconds


def test_an_alias_bomb_in_a_spec_is_refused_quickly_with_a_short_message(tmp_path, capsys):
    spec = tmp_path / "bomb.yaml"
    # an unknown key holding the bomb: the message used to echo its repr (58 MB at depth 6)
    spec.write_text("name: bomb\n" + BOMB_LEVELS + "base: {task: {digits: 3, junk: *g}}\n")
    message, seconds = refused(["run", str(spec), "--store", str(tmp_path / "store")], capsys)
    assert "alias" in message and f"{MAX_ALIAS_NODES:,}" in message
    assert len(message) < 1000 and seconds < 3
    assert not (tmp_path / "store").exists()


def test_an_alias_bomb_in_a_set_value_is_refused_quickly_and_a_few_aliases_load(capsys):
    value = "{" + BOMB_LEVELS.replace("\n", ", ") + "junk: *g}"
    message, seconds = refused(["trial", "--set", f"task={value}"], capsys)
    assert "alias" in message and len(message) < 1000 and seconds < 3
    # aliases that repeat a little still load
    text = "base: &base {digits: 3, width: 5}\nfirst: *base\nsecond: [*base, *base]\n"
    data = load_yaml_text(text, "spec")
    assert data["first"] == {"digits": 3, "width": 5} and data["second"] == [data["base"]] * 2


def test_a_recursive_alias_and_deep_nesting_are_one_line(capsys):
    with pytest.raises(ConfigError, match="refers to its own anchor"):
        load_yaml_text("a: &a [1, *a]\n", "spec")
    message, _ = refused(["trial", "--set", "task.digits=" + "[" * 5000 + "]" * 5000], capsys)
    assert "nested deeper than can be read" in message and len(message) < 1000


def test_a_grid_of_a_million_points_is_refused_before_it_is_built(capsys):
    argv = [
        "run",
        QUICKSTART,
        "--store",
        "/nonexistent/store",
        "--set",
        f"grid.train.seed={list(range(1000))}",
        "--set",
        f"grid.train.steps={list(range(1, 501))}",
    ]
    message, seconds = refused(argv, capsys)
    assert "the grid has 1,000,000 points (task.digits (2) x train.seed (1,000) x train.steps (500))" in message
    assert "more than the 100,000 allowed" in message and seconds < 2


@pytest.mark.parametrize(
    "override",
    [
        "model.size=" + "x" * 100_000,  # pydantic's own rule (literal)
        "task.digits=" + "9" * 4000,  # a task config's own validator
        "train.betas=[0.9, true, " + "1, " * 50_000 + "1]",  # a boolean for a number, in a long list
        "task.x" + "y" * 100_000 + "=1",  # an unknown key
        "tune.metric=" + "m" * 100_000,  # a message of a validator of the sweep
    ],
)
def test_every_echoed_value_is_cut_short(override, capsys):
    argv = (
        ["run", QUICKSTART, "--store", "/nonexistent/store", "--set", override]
        if override.startswith("tune.")
        else ["trial", "--set", override]
    )
    message, _ = refused(argv, capsys)
    assert len(message) < 600, message[:1000]
    assert "..." in message and SHOWN_CHARS < 600
