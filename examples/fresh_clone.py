#!/usr/bin/env python3
"""A newcomer's first hour, run for real: clone this repository's committed HEAD into a
temporary folder (no ``../shared/`` beside it), run the README's two commands, then every
``mmesid …`` command of the README's step table, in order, each copied from README.md.

    python3 examples/fresh_clone.py            # about an hour on 2 CPU cores
    FRESH_CLONE_SKIP_PYTEST=1 python3 examples/fresh_clone.py   # the test command's set-up only
    FRESH_CLONE_KEEP=1 python3 examples/fresh_clone.py          # keep the clone even on success

Prints each step's command, exit code and wall time, ends with a summary table, and exits 1
if any step failed (the clone is then kept for a look). Needs only python3, git and bash; the
commands themselves need what the README says (Python >= 3.11, PyPI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP_PYTEST = os.environ.get("FRESH_CLONE_SKIP_PYTEST") == "1"
KEEP = os.environ.get("FRESH_CLONE_KEEP") == "1"

results: list[tuple[str, str, int, float]] = []  # (phase, command, exit code, seconds)


def step(phase: str, command: str, cwd: Path, env: dict[str, str] | None = None) -> int:
    print(f"\n=== [{len(results) + 1}] {phase}\n$ {command}", flush=True)
    start = time.monotonic()
    rc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env).returncode
    seconds = time.monotonic() - start
    print(f"=== exit {rc} in {seconds:.1f} s", flush=True)
    results.append((phase, command, rc, seconds))
    return rc


def readme_commands(readme: str) -> tuple[str, str, list[str]]:
    """The demo command, the test command and the step table's `mmesid …` commands."""
    two = readme.split("## Two commands", 1)[1]
    demo = re.search(r"```bash\n(.*?)\n```", two, flags=re.S).group(1).strip()
    test = re.search(r"<!-- test-command -->\s*```bash\n(.*?)\n```", readme, flags=re.S)
    pipeline = readme.split("## The pipeline", 1)[1].split("\n## ", 1)[0]
    table = []
    for line in pipeline.splitlines():
        cells = line.split("|")
        if line.startswith("| ") and len(cells) > 3:
            table += re.findall(r"`(mmesid [^`]+)`", cells[2])
    return demo, test.group(1).strip(), table


TINY_BEAUTY_TXT = "".join(
    f"u{u} " + " ".join(str(1 + (u + k) % 8) for k in range(5)) + "\n" for u in range(12)
)
TINY_BEAUTY_CSV = "asin,title,imUrl,id\n" + "".join(
    f"B000{i:04d},tiny substitute item {i},,{i}\n" for i in range(1, 9)
)

PREPARE = """
import h5py, json, numpy as np
ids = [json.loads(line)["item_id"] for line in open("items.jsonl", encoding="utf-8")]
with h5py.File("../demo-ml-100k/embeddings.h5", "r") as f:
    row = {i.decode() if isinstance(i, bytes) else str(i): n for n, i in enumerate(f["item_ids"][:])}
    table = f["embeddings/collab"][:]
np.save("table.npy", table[[row[i] for i in ids]])
"""


def prepare(work: Path, demo: Path, python: Path) -> None:
    """The files the table's commands name, from the demo's outputs (or a labelled substitute)."""
    work.mkdir(parents=True)
    for name in ("items.jsonl", "sequences.jsonl"):
        shutil.copy(demo / name, work / name)
    links = {"seq.jsonl": "sequences.jsonl", "runs": "../demo-ml-100k/runs"}
    links["eval"] = "../demo-ml-100k/eval"
    for name, target in links.items():
        (work / name).symlink_to(target)
    shutil.copy(demo / "embeddings.h5", work / "new.h5")
    (work / "Beauty").mkdir()
    (work / "Beauty" / "Beauty.txt").write_text(TINY_BEAUTY_TXT)
    (work / "Beauty" / "Beauty_item.csv").write_text(TINY_BEAUTY_CSV)
    subprocess.run([str(python), "-c", PREPARE], cwd=work, check=True)
    print(
        f"\n=== working folder {work}, from the demo's outputs in {demo}:\n"
        "    items.jsonl, sequences.jsonl: copies of the demo's ML-100K data; seq.jsonl: a link\n"
        "    runs/, eval/: links to the demo's fine-tuned runs and evaluation reports\n"
        "    SUBSTITUTE Beauty/: a tiny MME-SID-layout folder (12 users, 8 items) written by this\n"
        "      script, since a clone has no Amazon data (docs/data.md says where to get it)\n"
        "    SUBSTITUTE table.npy: the demo's SASRec collab table, one row per item of items.jsonl\n"
        "    SUBSTITUTE new.h5: a copy of the demo's embeddings.h5 (a clone has no new items)",
        flush=True,
    )


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="mmesid-fresh-"))
    clone = tmp / "mmesid"
    assert not (tmp / "shared").exists()
    print(f"fresh clone of {REPO} (HEAD) in {clone}; no {tmp / 'shared'}", flush=True)
    ok = step("clone", f"git clone --quiet {REPO} {clone}", tmp) == 0
    if ok:
        demo_cmd, test_cmd, table = readme_commands((clone / "README.md").read_text("utf-8"))
        if SKIP_PYTEST:
            test_cmd = test_cmd.split(" && .venv/bin/python -m pytest")[0]
            print("FRESH_CLONE_SKIP_PYTEST=1: the test command without its pytest", flush=True)
        # A user's shell: no virtual environment of ours leaks into the clone's commands.
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        ok = step("README: demo", demo_cmd, clone, env) == 0
        step("README: tests", test_cmd, clone, env)
    if ok:
        demo = clone / "examples" / "work" / "demo-ml-100k"
        work = clone / "examples" / "work" / "readme-table"
        prepare(work, demo, clone / ".venv" / "bin" / "python")
        # `. .venv/bin/activate`, as the README says after the two commands.
        env["VIRTUAL_ENV"] = str(clone / ".venv")
        env["PATH"] = f"{clone / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
        for n, command in enumerate(table, 1):
            step(f"table {n}/{len(table)}", command, work, env)
    print("\n| # | step | exit | seconds | command |\n|---|---|---|---|---|")
    for n, (phase, command, rc, seconds) in enumerate(results, 1):
        short = command if len(command) <= 110 else command[:107] + "..."
        print(f"| {n} | {phase} | {rc} | {seconds:.1f} | `{short}` |")
    failed = [r for r in results if r[2] != 0] or ([] if ok else [("setup", "", 1, 0.0)])
    print(f"\ntotal {sum(r[3] for r in results):.0f} s; {len(failed)} step(s) failed")
    if failed or KEEP:
        print(f"the clone is kept in {clone}")
    else:
        shutil.rmtree(tmp)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
