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
