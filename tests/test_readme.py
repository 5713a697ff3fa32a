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
