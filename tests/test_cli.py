"""The CLI's one error handler: every command's bad input is one ``oodstudy:`` message, exit 2."""

from __future__ import annotations

import pytest

from study.cli import build_parser, main
from study.errors import ConfigError, OodstudyError, QueryError, StoreError
from study.store import Store


@pytest.fixture
def empty_store(tmp_path) -> str:
    root = str(tmp_path / "results")
    Store(root)
    return root


def bad_commands(tmp_path, empty_store) -> list[tuple[list[str], type, str]]:
    """(arguments, the error the command raises, a phrase of its message) per command group."""
    missing = str(tmp_path / "nothing")
    return [
        (["trial", "--set", "model.n_heads=4"], ConfigError, "model.n_heads: unknown key"),
        (["run", str(tmp_path / "no_such.yaml")], ConfigError, "no such file"),
        (["resume", "nope", "--store", empty_store], ConfigError, "no study named 'nope'"),
        (["status", "nope", "--store", empty_store], ConfigError, "no study named 'nope'"),
        (["status", "--store", empty_store], ConfigError, "holds 0 studies"),
        (["store", "ls", "--store", missing], StoreError, "no store at"),
        (["store", "sql", "SELEKT 1", "--store", empty_store], QueryError, "syntax error"),
        (["report", "--store", missing], ConfigError, "no store at"),
        (["report", "--store", empty_store], ConfigError, "name a study with --study"),
    ]


def test_errors_share_one_base():
    for error in (ConfigError, StoreError, QueryError):
        assert issubclass(error, OodstudyError)
    assert issubclass(ConfigError, ValueError)  # pydantic validators may raise it


def test_every_command_raises_its_bad_input_to_the_handler(tmp_path, empty_store):
    for argv, error, phrase in bad_commands(tmp_path, empty_store):
        args = build_parser().parse_args(argv)
        with pytest.raises(error, match=phrase):
            args.func(args)


def test_the_handler_prints_every_error_as_oodstudy_message_with_exit_2(tmp_path, empty_store, capsys):
    for argv, _, phrase in bad_commands(tmp_path, empty_store):
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "", argv
        first, *rest = err.splitlines()
        assert first.startswith("oodstudy: ") and phrase in err, (argv, err)
        assert err.count("oodstudy:") == 1 and "Traceback" not in err and not err.startswith("error:"), (argv, err)


def test_status_without_a_name_reads_the_stores_only_study(tmp_path, capsys):
    from study.config import SweepSpec
    from study.tune.runner import write_spec_copy

    spec = SweepSpec.model_validate(
        {"name": "only", "store": str(tmp_path / "results"), "base": {"train": {"steps": 40, "eval_every": 20}}}
    )
    write_spec_copy(spec)
    Store(spec.store).append(
        "trials",
        [{"trial_id": "t", "status": "completed", "score": 1.0, "grid": "{}", "config": "{}", "steps": 40}],
        study="only",
        cell="all",
    )
    assert main(["status", "--store", spec.store]) == 0
    assert "1/1 trials finished" in capsys.readouterr().out
    Store(spec.store).append(
        "trials",
        [{"trial_id": "u", "status": "completed", "score": 1.0, "grid": "{}", "config": "{}"}],
        study="other",
        cell="all",
    )
    assert main(["status", "--store", spec.store]) == 2
    assert "holds 2 studies (only, other); name one" in capsys.readouterr().err
