"""``sids.h5``: the semantic ID of every item under each modality (docs/formats.md).

Layout: ``/item_ids`` (N UTF-8 strings), ``/codes/<modality>`` (N × L int, one column per
level) with attrs (codebook size, collision statistics). Root attrs ``format =
"mmesid.sids"``, ``format_version`` and any file-level statistics.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mmesid_cli import __version__
from mmesid_cli.artifacts.atomic import atomic_path
from mmesid_cli.artifacts.h5 import attrs_to_dict, open_h5, read_item_ids, write_item_ids
from mmesid_cli.errors import UserError

FORMAT = "mmesid.sids"
FORMAT_VERSION = 1


@dataclass
class Sids:
    item_ids: list[str]
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # modality -> (N, L) int64
    attrs: dict[str, dict[str, object]] = field(default_factory=dict)  # modality -> attrs
    file_attrs: dict[str, object] = field(default_factory=dict)

    def modality(self, name: str, path: object = None) -> np.ndarray:
        if name not in self.codes:
            have = ", ".join(sorted(self.codes)) or "none"
            raise UserError(f"has no SIDs for {name!r} (it has: {have})", path=path)
        return self.codes[name]


def _validate(sids: Sids, path: object) -> None:
    n = len(sids.item_ids)
    for name, codes in sids.codes.items():
        if codes.ndim != 2 or codes.shape[0] != n or codes.shape[1] == 0:
            raise UserError(
                f"codes {name!r} have shape {codes.shape}, expected ({n}, L)", path=path
            )
        if not np.issubdtype(codes.dtype, np.integer):
            raise UserError(f"codes {name!r} are {codes.dtype}, expected integers", path=path)
        if codes.size and codes.min() < 0:
            raise UserError(f"codes {name!r} hold negative code indices", path=path)


def read_sids(path: str | os.PathLike[str]) -> Sids:
    path = Path(path)
    with open_h5(path, "SID file", FORMAT, FORMAT_VERSION) as handle:
        item_ids = read_item_ids(handle, path)
        codes: dict[str, np.ndarray] = {}
        attrs: dict[str, dict[str, object]] = {}
        for name, dataset in (handle.get("codes") or {}).items():
            codes[name] = np.asarray(dataset[()], dtype=np.int64)
            attrs[name] = attrs_to_dict(dataset.attrs)
        file_attrs = attrs_to_dict(handle.attrs)
    sids = Sids(item_ids=item_ids, codes=codes, attrs=attrs, file_attrs=file_attrs)
    _validate(sids, path)
    if not codes:
        raise UserError("holds no /codes/<modality> dataset", path=path)
    return sids


def write_sids(path: str | os.PathLike[str], sids: Sids) -> None:
    _validate(sids, path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        for key, value in sids.file_attrs.items():
            if key not in ("format", "format_version"):
                handle.attrs[key] = value
        handle.attrs["format"] = FORMAT
        handle.attrs["format_version"] = FORMAT_VERSION
        handle.attrs["created_by"] = f"mmesid {__version__}"
        write_item_ids(handle, sids.item_ids)
        group = handle.create_group("codes")
        for name, codes in sids.codes.items():
            small = np.int16 if codes.size == 0 or codes.max() < 2**15 else np.int64
            dataset = group.create_dataset(name, data=codes.astype(small))
            for key, value in sids.attrs.get(name, {}).items():
                dataset.attrs[key] = value


def check_made_by(
    sids_path: str | os.PathLike[str], tokenizer_path: str | os.PathLike[str]
) -> None:
    """Refuse a ``sids.h5`` that another tokeniser made than ``tokenizer_path``.

    ``tokenize`` records the tokeniser's digest in both files; a pair from two runs (or
    from a run killed between its renames) differs. Cheap: reads only the attrs and the
    safetensors header. Files without a digest (older ones, SID tables a finetune run
    exports) are not checked.
    """
    import json

    from mmesid_cli.artifacts.weights import read_metadata

    sids_path = Path(sids_path)
    with open_h5(sids_path, "SID file", FORMAT, FORMAT_VERSION) as handle:
        made_by = attrs_to_dict(handle.attrs).get("tokenizer_digest")
    try:
        config = json.loads(read_metadata(tokenizer_path).get("config") or "{}")
    except json.JSONDecodeError:
        config = {}
    if not isinstance(config, dict):
        return
    digest = config.get("digest")
    if made_by and digest and made_by != digest:
        raise UserError(
            f"was made by another tokeniser than {tokenizer_path} (files of two runs, or a "
            "run cut short); give the sids.h5 written with that tokeniser, or tokenise again",
            path=sids_path,
        )
    trained_on = config.get("sids_tokenizer_digest")  # SID tables a finetune run exported
    if made_by and trained_on and made_by != trained_on:
        raise UserError(
            f"is not the sids.h5 the run of {tokenizer_path} was trained with (its codes "
            "index those tables); give the sids.h5 of that run",
            path=sids_path,
        )
