"""SIGKILL at several points of `tokenize` and `embed -m collab`, over an earlier run's files.

A killed process runs no cleanup: whatever it left is what a user finds. Each case forks a
process that runs the real command and stops at one point (mid-training, a temporary file
complete or half-written, before the renames, between two renames); the test kills it
with SIGKILL and checks that

- every set of files that belong together (tokeniser + SIDs + report; embeddings +
  SASRec checkpoint + report) is the earlier run's, byte for byte, or, killed between
  two renames, a mixed set that the recorded digests give away (and a reader refuses);
- a re-run of the same command removes the killed run's temporaries and succeeds, leaving
  a complete, consistent set and no `.partial`.

The processes are forked from one helper that has imported torch once, so the whole file
runs in seconds rather than paying the import for every kill.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mmesid_cli.artifacts.embeddings import read_embeddings
from mmesid_cli.artifacts.sids import check_made_by
from mmesid_cli.artifacts.weights import read_weights
from mmesid_cli.errors import UserError
from tests.cli.test_tokenize import TINY, write_tiny_embeddings
from tests.conftest import run_cli, write_tiny_dataset

# The helper reads one JSON job per line: it forks a child that applies the job's stop
# point and runs `mmesid ARGS`; it reports "PID n", and "EXIT status" once reaped. The
# child reports "REACHED" on the helper's stdout when it stops at its point.
HELPER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    import torch  # noqa: F401  (imported once, before any fork)
    from mmesid_cli.cli.main import main
    # what the two commands import when they run, so each fork starts warm
    import mmesid_cli.data.records, mmesid_cli.data.split, mmesid_cli.evaluation  # noqa
    import mmesid_cli.artifacts.reports, mmesid_cli.encoders.sasrec  # noqa
    import mmesid_cli.tokenizer.config, mmesid_cli.tokenizer.stats  # noqa
    import mmesid_cli.tokenizer.train  # noqa
    import accelerate, torch._dynamo  # noqa  (seconds to import: once, not per kill)
    import peft, transformers, mmesid_cli.llm4sr.train  # noqa
    from mmesid_cli.artifacts import embeddings, sids, weights
    from mmesid_cli.encoders import collab
    from mmesid_cli.tokenizer import serialize

    NOTIFY = os.dup(1)

    def reached():
        os.write(NOTIFY, b"REACHED\\n")
        time.sleep(600)

    def stop_at(point, watched):
        if point == "training:tokenize":  # after the first checkpoint, training goes on
            real_ckpt = serialize.save_checkpoint
            def ckpt(*a, **k):
                real_ckpt(*a, **k)
                reached()
            serialize.save_checkpoint = ckpt
        elif point == "training:embed":  # after the first epoch
            real_train = collab.train_sasrec
            def train(*a, **k):
                on_epoch = k.get("on_epoch")
                def after(entry):
                    if on_epoch is not None:
                        on_epoch(entry)
                    reached()
                k["on_epoch"] = after
                return real_train(*a, **k)
            collab.train_sasrec = train
        elif point == "checkpoint:finetune":  # a --resume checkpoint made, training goes on
            from mmesid_cli.llm4sr import train as finetune_train
            real_save_ckpt = finetune_train._save_checkpoint
            def save_ckpt(*a, **k):
                real_save_ckpt(*a, **k)
                reached()
            finetune_train._save_checkpoint = save_ckpt
        elif point.startswith("temporary-written:"):  # a safetensors temporary complete
            name = point.split(":", 1)[1]
            real_save = weights.save_file
            def save(tensors, path, metadata=None):
                real_save(tensors, path, metadata=metadata)
                if Path(path).name.startswith(f".{name}."):
                    reached()
            weights.save_file = save
        elif point.startswith("half-written:"):  # an HDF5 temporary cut mid-write
            module = {"sids": sids, "embeddings": embeddings}[point.split(":", 1)[1]]
            real_ids = module.write_item_ids
            def ids(handle, item_ids):
                real_ids(handle, item_ids)
                handle.flush()
                reached()
            module.write_item_ids = ids
        elif point.startswith("rename:"):  # before the n-th rename of the set (0-based)
            stop, count = int(point.split(":", 1)[1]), [0]
            real_replace = os.replace
            def replace(src, dst, **k):
                if Path(dst).name in watched:
                    if count[0] == stop:
                        reached()
                    count[0] += 1
                return real_replace(src, dst, **k)
            os.replace = replace

    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.chdir(job["cwd"])
            stop_at(job["point"], set(job["watched"]))
            try:
                main(job["args"])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            os._exit(code)
        print(f"PID {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"EXIT {status}", flush=True)
    """
)


class Helper:
    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", HELPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the helper died"
        return line.strip()

    def kill_at(self, point: str, args: list[object], cwd: Path, watched: list[str]) -> None:
        """Run ``mmesid ARGS`` in a fork, wait until it stops at ``point``, SIGKILL it."""
        assert self.process.stdin is not None
        job = {"point": point, "args": [str(a) for a in args], "cwd": str(cwd), "watched": watched}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        pid = int(self._line().split()[1])
        reply = self._line()
        assert reply == "REACHED", f"{point}: the command ended ({reply}) before the point"
        os.kill(pid, signal.SIGKILL)
        status = self._line()
        assert status.startswith("EXIT ")
        assert os.WIFSIGNALED(int(status.split()[1]))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def helper():
    process = Helper()
    yield process
    process.close()


def _snapshot(folder: Path, names: list[str]) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


def _partials(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".partial"))


# --- tokenize ----------------------------------------------------------------------------

TOKENIZE_SET = ["tokenizer.safetensors", "sids.h5", "report.json"]
TOKENIZE_POINTS = [
    "training:tokenize",
    "temporary-written:tokenizer.safetensors",
    "half-written:sids",
    "rename:0",
    "rename:1",
]


def _tokenize_args(emb: Path, out: Path, seed: int) -> list[object]:
    return [
        "tokenize",
        emb,
        *TINY,
        "--epochs",
        "3",
        "--checkpoint-every",
        "1",
        "--seed",
        seed,
        "-o",
        out,
    ]


def _tokenize_consistent(out: Path) -> None:
    """Tokeniser, SIDs and report name one tokeniser (the digest each records)."""
    check_made_by(out / "sids.h5", out / "tokenizer.safetensors")
    report = json.loads((out / "report.json").read_text())
    config = read_weights(out / "tokenizer.safetensors", kind="tokenizer").config
    assert report["tokenizer_digest"] == config["digest"]


@pytest.fixture(scope="module")
def earlier_tokenize(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An earlier run's files, made once and copied into each case's folder."""
    folder = tmp_path_factory.mktemp("earlier-tokenize")
    write_tiny_embeddings(folder / "embeddings.h5")
    assert run_cli(*_tokenize_args(folder / "embeddings.h5", folder / "tok", 1)) == 0
    _tokenize_consistent(folder / "tok")
    return folder


@pytest.mark.parametrize("point", TOKENIZE_POINTS)
def test_kill_tokenize(
    helper: Helper, earlier_tokenize: Path, tmp_path: Path, point: str, capsys
) -> None:
    shutil.copytree(earlier_tokenize, tmp_path, dirs_exist_ok=True)
    emb, out = tmp_path / "embeddings.h5", tmp_path / "tok"
    before = _snapshot(out, TOKENIZE_SET)

    helper.kill_at(point, _tokenize_args(emb, out, 2), tmp_path, TOKENIZE_SET)

    after = _snapshot(out, TOKENIZE_SET)
    if point == "rename:1":  # the new tokeniser is in, the old SIDs are still there
        assert after["tokenizer.safetensors"] != before["tokenizer.safetensors"]
        assert after["sids.h5"] == before["sids.h5"]
        with pytest.raises(UserError, match="another tokeniser"):
            check_made_by(out / "sids.h5", out / "tokenizer.safetensors")
        args = ["concordance", "--embeddings", emb, "-s", _sequences(tmp_path)]
        args += ["--codebook", out / "tokenizer.safetensors", "--sids", out / "sids.h5"]
        capsys.readouterr()
        assert run_cli(*args, "--bootstrap", "0") == 2
        assert "another tokeniser" in capsys.readouterr().err
    else:
        assert after == before, "the earlier run's files changed"
        _tokenize_consistent(out)
    if point not in ("rename:1", "training:tokenize"):  # a checkpoint is complete when made
        assert _partials(out), "the killed run left no temporary: the point came too late"

    assert run_cli(*_tokenize_args(emb, out, 2)) == 0  # the re-run cleans up and succeeds
    assert not _partials(tmp_path)
    _tokenize_consistent(out)
    assert _snapshot(out, TOKENIZE_SET)["sids.h5"] != before["sids.h5"]
    for name in TOKENIZE_SET:
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~_umask()


def _sequences(folder: Path) -> Path:
    """sequences.jsonl over the items of write_tiny_embeddings (I000 …)."""
    path = folder / "sequences.jsonl"
    rng = np.random.default_rng(0)
    with open(path, "w") as handle:
        for user in range(20):
            items = [f"I{int(i):03d}" for i in rng.choice(40, size=5, replace=False)]
            handle.write(json.dumps({"user_id": f"U{user}", "items": items}) + "\n")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- embed -m collab ---------------------------------------------------------------------

EMBED_SET = ["emb.h5", "sasrec.safetensors", "sasrec_report.json"]
EMBED_POINTS = [
    "training:embed",
    "half-written:embeddings",
    "temporary-written:sasrec.safetensors",
    "rename:0",
    "rename:1",
]


def _embed_args(items: Path, sequences: Path, out: Path, seed: int) -> list[object]:
    return [
        "embed", items, "-m", "collab", "--sequences", sequences, "-o", out / "emb.h5",
        "--max-epochs", "2", "--eval-every", "1", "--dim", "8", "--seed", seed,
    ]  # fmt: skip


def _table_digests(out: Path) -> tuple[str, str]:
    """The SASRec item-table digest recorded in emb.h5 and in sasrec.safetensors."""
    table = read_embeddings(out / "emb.h5").tables["collab"]
    checkpoint = read_weights(out / "sasrec.safetensors", kind="sasrec")
    return str(table.attrs["item_table_sha256"]), str(checkpoint.config["item_table_sha256"])


def _embed_consistent(out: Path) -> None:
    """Table, checkpoint and report record one SASRec item table, the table's own digest."""
    in_table, in_checkpoint = _table_digests(out)
    report = json.loads((out / "sasrec_report.json").read_text())
    values = read_embeddings(out / "emb.h5").tables["collab"].values
    assert in_table == in_checkpoint == report["item_table_sha256"]
    assert (
        in_table == hashlib.sha256(np.ascontiguousarray(values, np.float32).tobytes()).hexdigest()
    )


@pytest.fixture(scope="module")
def earlier_embed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("earlier-embed")
    items, sequences = write_tiny_dataset(folder / "data")
    assert run_cli(*_embed_args(items, sequences, folder / "out", 1)) == 0
    _embed_consistent(folder / "out")
    return folder


@pytest.mark.parametrize("point", EMBED_POINTS)
def test_kill_embed_collab(helper: Helper, earlier_embed: Path, tmp_path: Path, point: str) -> None:
    shutil.copytree(earlier_embed, tmp_path, dirs_exist_ok=True)
    items, sequences = tmp_path / "data" / "items.jsonl", tmp_path / "data" / "sequences.jsonl"
    out = tmp_path / "out"
    before = _snapshot(out, EMBED_SET)

    helper.kill_at(point, _embed_args(items, sequences, out, 2), tmp_path, EMBED_SET)

    after = _snapshot(out, EMBED_SET)
    if point == "rename:1":  # the new table is in, the old checkpoint is still there
        assert after["emb.h5"] != before["emb.h5"]
        assert after["sasrec.safetensors"] == before["sasrec.safetensors"]
        in_table, in_checkpoint = _table_digests(out)
        assert in_table != in_checkpoint  # the mismatch is visible in the recorded digests
    else:
        assert after == before, "the earlier run's files changed"
        _embed_consistent(out)
        if point != "training:embed":
            assert _partials(out), "the killed run left no temporary: the point came too late"

    assert run_cli(*_embed_args(items, sequences, out, 2)) == 0
    assert not _partials(tmp_path)
    _embed_consistent(out)
    assert _snapshot(out, EMBED_SET)["sasrec.safetensors"] != before["sasrec.safetensors"]
    for name in EMBED_SET:
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~_umask()


# --- finetune ------------------------------------------------------------------------------


def test_kill_finetune_leaves_no_manifest_and_resumes(helper: Helper, tmp_path: Path) -> None:
    """config.json, the file a Makefile takes for a finished run, only exists once training
    has ended: a killed run has config.running.json, is refused by evaluate, and resumes."""
    from tests.llm4sr.tiny import tiny_backbone, tiny_files

    files = tiny_files(tmp_path / "in")
    llama = tiny_backbone(tmp_path / "llama")
    run = tmp_path / "run"
    args = [
        "finetune", "--sequences", files.sequences, "--embeddings", files.embeddings,
        "--tokenizer", files.tokenizer, "--sids", files.sids, "--model", llama, "-o", run,
        "--max-steps", "4", "--save-every", "2", "--eval-every", "2", "--eval-users", "10",
        "--warmup-steps", "0", "--batch-size", "8",
    ]  # fmt: skip
    helper.kill_at("checkpoint:finetune", args, tmp_path, [])

    assert not (run / "config.json").exists()
    assert (run / "config.running.json").is_file() and (run / "checkpoint").is_dir()
    evaluate = ["evaluate", run, "--sequences", files.sequences, "--items", files.items]
    assert run_cli(*evaluate, "--k", "5") == 2  # not a finished run

    assert run_cli(*args, "--resume") == 0
    assert (run / "config.json").is_file() and not (run / "config.running.json").exists()
    assert json.loads((run / "config.json").read_text())["summary"]["steps"] == 4
    assert not _partials(tmp_path)
    assert run_cli(*evaluate, "--k", "5") == 0
