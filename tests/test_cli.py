"""The command line as a new user meets it: help that explains, the data commands end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recsys_hyper.cli import main

COMMANDS = [[], ["data"], ["data", "validate"], ["data", "describe"], ["data", "synth"],
            ["data", "import-movielens"]]


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "top")
def test_every_command_explains_itself(words, capsys):
    with pytest.raises(SystemExit) as info:
        main(words + ["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: recsys-hyper")
    assert len(out.splitlines()) > 6
    if words[-1:] == ["synth"]:
        assert "taste clusters" in out and "default (3,000 users x 1,000 items)" in out
    if words[-1:] == ["import-movielens"]:
        assert "u.data" in out and "ratings.dat" in out and "ratings.csv" in out


def _all_commands(parser, words=()):
    import argparse

    yield list(words), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from _all_commands(command, (*words, name))


def test_help_shows_defaults_that_say_something_builds_without_torch_and_v_goes_anywhere(tmp_path, capsys):
    from recsys_hyper.cli import build_parser

    commands = list(_all_commands(build_parser()))
    assert len(commands) > 12
    for words, parser in commands:
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, (words, text)
        assert "default: today, UTC) (default" not in text
    # building the parser (every --help, every argument error) imports neither the model code nor
    # the data libraries: it answers at once
    code = ("import sys; from recsys_hyper.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pandas', 'mlflow', 'pyspark') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    # nor does a dataset command that stops at a missing path import the model code
    code = ("import sys; from recsys_hyper.cli import main; code = main(['data', 'validate', '/nonexistent/ds']); "
            "print(code, 'torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "2 False"
    # -v after the command, as before it; --no-progress on every command that serves or trains
    main(["data", "synth", "--preset", "tiny", "--out", str(tmp_path / "ds"), "--no-progress", "-v"])
    for words in (["recommend"], ["predict"], ["onboard"], ["score"], ["train"], ["evaluate"]):
        assert "--no-progress" in dict((tuple(w), p) for w, p in commands)[tuple(words)].format_help()


def test_long_work_off_a_terminal_reports_in_timestamped_log_lines(caplog, monkeypatch):
    """No long step is silent where no bar can show (a nightly's log): a grid search that takes
    seconds writes a line every RECSYS_HYPER_PROGRESS_EVERY seconds, then a closing line; short
    work writes nothing, and --no-progress silences it."""
    import logging
    import time

    from recsys_hyper import progress
    from recsys_hyper.numerics.search import grid_search

    monkeypatch.setattr(progress, "DELAY_S", 0.2)
    monkeypatch.setenv("RECSYS_HYPER_PROGRESS_EVERY", "0.3")
    caplog.set_level(logging.INFO, logger="recsys_hyper")

    def slow(x):
        time.sleep(0.25)
        return x

    grid_search({"x": [3, 1, 2, 5]}, slow, "score", desc="slow search")
    lines = [r.getMessage() for r in caplog.records if r.name == "recsys_hyper.progress"]
    assert len(lines) >= 3 and lines[-1].startswith("slow search: done, 4 candidates"), lines
    assert any(line.startswith("slow search: ") and "/4 candidates (" in line and "elapsed" in line for line in lines)
    caplog.clear()
    grid_search({"x": [1, 2]}, lambda x: x, "score", desc="quick search")              # quick: nothing
    progress.set_enabled(False)
    try:
        grid_search({"x": [3, 1, 2, 5]}, slow, "score", desc="silenced search")
    finally:
        progress.set_enabled(True)
    assert not [r for r in caplog.records if r.name == "recsys_hyper.progress"]


def test_command_log_lines_carry_a_timestamp(tmp_path):
    import re

    (tmp_path / "landing" / "events" / "date=latest").mkdir(parents=True)             # a warning, then an error
    result = subprocess.run([sys.executable, "-m", "recsys_hyper", "pipeline", "nightly", "--all", "--landing",
                             str(tmp_path / "landing"), "--work", str(tmp_path / "work")], capture_output=True,
                            text=True, env={**__import__("os").environ,
                                            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"})
    assert result.returncode == 2 and "not a date partition" in result.stderr
    logged = [line for line in result.stderr.splitlines() if re.search(r"\b(DEBUG|INFO|WARNING)\b", line)]
    assert logged and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING) ", line)
                          for line in logged), result.stderr


def test_console_script_runs():
    bin_dir = __import__("pathlib").Path(sys.executable).parent
    result = subprocess.run([str(bin_dir / "recsys-hyper"), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("recsys-hyper ")


def test_synth_validate_describe_end_to_end(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "synth", "--preset", "tiny", "--users", "80", "--items", "60", "--seed", "3",
                 "--out", str(out), "--no-progress"]) == 0
    assert "wrote 80 users x 60 items" in capsys.readouterr().out
    assert main(["data", "validate", str(out), "--json"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["valid"] and v["users"] == 80 and v["feedback"] == "explicit"
    assert main(["data", "describe", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["users"] == 80 and d["items"] <= 60 and d["interactions"] == v["interactions"]
    assert sum(d["rating"]["distribution"].values()) == d["interactions"]
    assert d["item_features"]["genres"]["kind"] == "list<string>"
    assert main(["data", "describe", str(out)]) == 0
    text = capsys.readouterr().out
    assert "history length" in text and "rating" in text and "occupation" in text


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["data", "synth", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_bad_arguments_are_explained(capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "synth", "--users", "-3", "--out", "x"])
    assert info.value.code == 2
    assert "expected a positive whole number, got -3" in capsys.readouterr().err


def test_validate_missing_directory(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
