"""Every `--help` fits an 80-column terminal: nothing cut, no type tag on a flag."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from mmesid_cli.cli.main import app


def _command_paths() -> list[tuple[str, ...]]:
    """Every command of the app, groups and their subcommands included."""
    root = typer.main.get_command(app)
    paths: list[tuple[str, ...]] = [()]

    # typer bundles its own click, so a group is known by its subcommands, not its class.
    def walk(group: object, prefix: tuple[str, ...]) -> None:
        for name, command in group.commands.items():  # type: ignore[attr-defined]
            paths.append((*prefix, name))
            if hasattr(command, "commands"):
                walk(command, (*prefix, name))

    walk(root, ())
    return paths


COMMANDS = _command_paths()


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_subcommand_is_covered() -> None:
    names = {" ".join(p) for p in COMMANDS}
    assert {"tokenize", "finetune", "data import-amazon", "data stats", "inspect"} <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "mmesid")
def test_help_fits_80_columns(path: tuple[str, ...]) -> None:
    lines = _help(path).splitlines()
    # "..." ends a usage line with a variadic argument; anywhere else it is a cut line.
    cut = [
        line
        for line in lines
        if line.rstrip().endswith(("…", "...")) and not line.startswith("Usage:")
    ]
    assert not cut, f"lines cut at 80 columns: {cut}"
    wide = [line for line in lines if len(line) > 80]
    assert not wide, f"lines wider than 80 columns: {wide}"
    # A flag takes no value, so it shows no type (`--resume <bool>` read as taking one).
    assert not [line for line in lines if "<bool>" in line]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "mmesid")
def test_help_keeps_option_names_whole(path: tuple[str, ...]) -> None:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    text = _help(path)
    for param in command.params:
        if getattr(param, "hidden", False):  # an old name kept working, not shown
            continue
        for opt in [*param.opts, *param.secondary_opts]:
            if opt.startswith("--"):
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), opt


def test_help_in_a_real_80_column_terminal() -> None:
    """The installed `mmesid` with COLUMNS=80, as a user runs it."""
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run(
        [sys.executable, "-m", "mmesid_cli", "tokenize", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--gradient" not in out  # tokenize has no such option; finetune does
    assert "--sids-out" in out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert not [line for line in out.splitlines() if line.rstrip().endswith("…")]


def test_choice_error_is_one_clean_line(capsys) -> None:
    from tests.conftest import run_cli

    assert run_cli("evaluate", "--baseline", "pop", "--sequences", "s", "--items", "i") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Value error" not in err
    assert "'pop' is not one of 'popularity', 'sasrec'" in err
    assert "mmesid evaluate --help" in err
