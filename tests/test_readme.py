"""The README's Python example runs as written, so the documentation cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    mmd_shifted, mmd_same = map(float, printed[0].split())
    assert mmd_shifted > 10 * abs(mmd_same)
    tau_a = float(printed[1].split()[1].rstrip(","))
    assert 0.3 < tau_a < 0.95  # noise keeps part of the order, not all of it


def test_readme_test_command_is_what_ci_runs() -> None:
    text = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in text and "<!-- test-command -->" in ci
    assert "python -m pytest" in text.split("<!-- test-command -->", 1)[1].split("```", 2)[1]


def _mmesid_commands(text: str) -> set[tuple[str, ...]]:
    """(subcommand[, subsubcommand]) of every `mmesid …` in shell blocks and inline code."""
    blocks = re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    found = set()
    for chunk in [*blocks, *spans]:
        for match in re.finditer(
            r"(?:^|[\s;&|(]|bin/)mmesid ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", chunk
        ):
            sub, subsub = match.groups()
            found.add((sub, subsub) if sub == "data" and subsub else (sub,))
    return found


def test_readme_says_how_to_activate_the_environment() -> None:
    text = README.read_text(encoding="utf-8")
    setup = text.index(".venv/bin/python -m pytest")
    first_use = min(text.index(m) for m in re.findall(r"`mmesid [a-z]", text))
    activate = text.index(". .venv/bin/activate")
    assert setup < activate < first_use, "the activation line must follow the set-up commands"


def test_every_readme_command_has_a_help() -> None:
    """Each `mmesid` subcommand the READMEs and the CLI guide show exists: its `--help` exits
    0 as a user runs it."""
    import shutil
    import subprocess
    import sys

    commands: set[tuple[str, ...]] = set()
    for path in (
        README,
        README.parent / "examples" / "README.md",
        README.parent / "docs" / "cli.md",
    ):
        commands |= _mmesid_commands(path.read_text(encoding="utf-8"))
    assert {("tokenize",), ("finetune",), ("data", "import-amazon"), ("inspect",)} <= commands
    script = Path(sys.executable).with_name("mmesid")
    mmesid = [str(script)] if script.exists() else [shutil.which("mmesid") or "mmesid"]
    for command in sorted(commands):
        result = subprocess.run([*mmesid, *command, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, f"mmesid {' '.join(command)} --help: {result.stderr}"
        assert "Usage: mmesid " + " ".join(command) in result.stdout
