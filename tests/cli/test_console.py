"""The CLI's progress: timestamped lines in a log, at least every interval, and at the end."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from mmesid_cli.cli.console import Bar
from mmesid_cli.progress import NO_PROGRESS, Progress, Task

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "


def _log_console() -> tuple[Console, io.StringIO]:
    text = io.StringIO()
    return Console(file=text, force_terminal=False, width=200), text


def test_a_log_gets_timestamped_lines_while_a_step_is_silent() -> None:
    console, text = _log_console()
    with Bar(console, interval=1.0) as bar:
        task = bar.task("ranking", total=40)
        task.advance(10)
        time.sleep(3.5)  # one long batch: no advance, yet the log shows the bar is alive
        task.advance(30)
    lines = text.getvalue().splitlines()
    assert len(lines) >= 2, lines
    assert all(re.match(STAMP, line) for line in lines)
    assert re.search(r"ranking: 10/40 \(25%\), 0:00:0\d elapsed, ETA \d:\d\d:\d\d$", lines[0])
    assert re.search(r"ranking: 40/40 \(100%\), 0:00:0\d elapsed, done$", lines[-1])


def test_notes_are_timestamped_in_a_log_and_silence_the_heartbeat() -> None:
    console, text = _log_console()
    with Bar(console, interval=60.0) as bar:
        task = bar.task("SASRec epoch 1/3", total=5)
        bar.note("SASRec epoch 1/3: loss 9.0000, 17 s")
        task.update(completed=0, description="SASRec epoch 2/3")
    lines = text.getvalue().splitlines()
    assert re.fullmatch(STAMP + r"SASRec epoch 1/3: loss 9\.0000, 17 s", lines[0])
    assert len(lines) == 1  # nothing advanced since: no closing line
    assert "embed.py" not in text.getvalue()  # no rich log path at the end of a line


def test_a_terminal_draws_a_bar_and_prints_notes_plainly() -> None:
    text = io.StringIO()
    console = Console(file=text, force_terminal=True, width=100)
    with Bar(console, interval=0.1) as bar:
        task = bar.task("finetune", total=4)
        task(4)  # a task is also the Callable[[int], None] the library's callbacks take
        bar.note("step 4: loss 1.0")
    out = text.getvalue()
    assert "finetune" in out and "4/4" in out and "step 4: loss 1.0" in out
    assert not re.search(STAMP, out)


def test_the_library_default_reports_nothing() -> None:
    assert isinstance(NO_PROGRESS, Progress)
    task = NO_PROGRESS.task("anything", total=3)
    assert isinstance(task, Task)
    task(2), task.update(completed=1, description="x"), NO_PROGRESS.note("ignored")


def test_a_closed_task_leaves_the_display_after_its_last_line() -> None:
    console, text = _log_console()
    with Bar(console, interval=60.0) as bar:
        task = bar.task("validation at step 100", total=8)
        task(8)
        task.close()
        task.close()  # twice is harmless
        assert bar.tasks == []
    lines = text.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "validation at step 100: 8/8 (100%), 0:00:00 elapsed, done"
    )
