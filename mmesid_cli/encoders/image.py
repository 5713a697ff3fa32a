"""Image embeddings of items with a CLIP-style model (docs/method.md §2, "image").

The paper uses LLM2CLIP image features; here any transformers checkpoint whose model has
``get_image_features`` (CLIP, SigLIP, …) works, loaded from a local folder (or the hub
cache) with ``AutoModel`` and its image processor. Images are local files named by the
item's ``image`` field, relative to the items file; nothing is downloaded.

An item without an image (no ``image`` field, or a file that does not exist) gets a zero
row and ``present = False``, so every table keeps one row per item; a file that exists but
is not a readable image is a user error naming the item.

Preprocessing uses the PIL backend of the image processor: torchvision, which the "fast"
processors need, does not work beside this project's torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmesid_cli.data.records import ItemTable
from mmesid_cli.encoders import looks_like_path, resolve_device
from mmesid_cli.errors import UserError


@dataclass
class ImageEncoderConfig:
    model: str = ""  # a local checkpoint folder (or a cached hub name); no default ships
    batch_size: int = 32
    device: str = "auto"
    normalize: bool = False  # unit L2 norm per row (zero rows of missing images stay zero)
    require_all: bool = False  # fail when an item has no image instead of a zero row


@dataclass
class ImageFiles:
    """The image file of every item (None where there is none) and why some are missing."""

    paths: list[Path | None]
    no_field: int  # items without an 'image' field
    not_found: int  # items whose 'image' file does not exist

    @property
    def present(self) -> np.ndarray:
        return np.array([p is not None for p in self.paths], dtype=bool)


def find_images(items: ItemTable, require_all: bool = False) -> ImageFiles:
    """Resolve every item's image path; check that each existing file is an image.

    Only the file headers are read here, so a broken file fails before any model runs.
    """
    from PIL import Image, UnidentifiedImageError

    base = items.path.parent if items.path is not None else Path.cwd()
    paths: list[Path | None] = []
    no_field = not_found = 0
    first_missing: str | None = None
    for row, record in enumerate(items.records):
        value = record.get("image")
        if value is None or value == "":
            paths.append(None)
            no_field += 1
            first_missing = first_missing or f"item {record['item_id']!r} has no 'image' field"
            continue
        if not isinstance(value, str):
            raise UserError(
                f"item {record['item_id']!r} (record {row + 1}): 'image' must be a path string",
                path=items.path,
            )
        path = base / value
        if not path.is_file():
            paths.append(None)
            not_found += 1
            first_missing = first_missing or f"item {record['item_id']!r}: {path} does not exist"
            continue
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 - reading the header is the check
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(
                f"item {record['item_id']!r}: unreadable image {path}: {exc}", path=items.path
            ) from None
        paths.append(path)
    missing = no_field + not_found
    if require_all and missing:
        raise UserError(
            f"{missing} of {len(items)} items have no image (first: {first_missing}); "
            "drop --require-all to embed them as zero rows",
            path=items.path,
        )
    if missing == len(items):
        raise UserError(
            f"no item has an image file (first: {first_missing}); "
            "images are local paths in each item's 'image' field, relative to the items file",
            path=items.path,
        )
    return ImageFiles(paths=paths, no_field=no_field, not_found=not_found)


def load_image_model(model: str, device: str = "auto"):
    """(model, image processor) for a CLIP-style checkpoint; failures are user errors."""
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor

    if not model:
        raise UserError("the image modality needs --model (a CLIP-style checkpoint folder)")
    path = Path(model).expanduser()
    if not path.exists() and looks_like_path(model):
        raise UserError("--model: no such model folder", path=model)
    target = str(path) if path.exists() else model
    try:
        try:
            processor = AutoImageProcessor.from_pretrained(target, backend="pil")
        except (OSError, ValueError, KeyError):
            # Some checkpoints only describe a joint processor; take its image part.
            processor = AutoProcessor.from_pretrained(target).image_processor
        network = AutoModel.from_pretrained(target, dtype=torch.float32)
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise UserError(f"--model {model!r}: cannot load an image model: {first}") from None
    if not hasattr(network, "get_image_features"):
        raise UserError(
            f"--model {model!r}: {type(network).__name__} has no get_image_features "
            "(expected a CLIP-style model such as CLIP or SigLIP)"
        )
    return network.to(resolve_device(device)).eval(), processor


def _features(network, pixel_values):
    out = network.get_image_features(pixel_values=pixel_values)
    # transformers 5 returns an output object whose pooler_output is the projected embedding.
    return out if hasattr(out, "shape") else out.pooler_output


def encode_images(
    items: ItemTable,
    files: ImageFiles,
    config: ImageEncoderConfig,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """((N, d) float32 with zero rows for missing images, (N,) present mask, attrs)."""
    import torch
    import transformers
    from PIL import Image

    network, processor = load_image_model(config.model, config.device)
    device = next(network.parameters()).device
    rows = [i for i, p in enumerate(files.paths) if p is not None]
    values: np.ndarray | None = None
    for start in range(0, len(rows), config.batch_size):
        batch = rows[start : start + config.batch_size]
        images = []
        for row in batch:
            try:
                with Image.open(files.paths[row]) as image:
                    images.append(image.convert("RGB"))
            except OSError as exc:  # a file whose header is fine but whose data is not
                raise UserError(
                    f"item {items.records[row]['item_id']!r}: unreadable image "
                    f"{files.paths[row]}: {exc}",
                    path=items.path,
                ) from None
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
        with torch.no_grad():
            feats = _features(network, pixels).float()  # (b, d)
        if config.normalize:
            feats = torch.nn.functional.normalize(feats, dim=-1)
        if values is None:
            values = np.zeros((len(items), feats.shape[1]), dtype=np.float32)
        values[batch] = feats.cpu().numpy()
        if progress is not None:
            progress(len(batch))
    assert values is not None  # find_images guarantees at least one image
    attrs: dict[str, object] = {
        "encoder": Path(config.model).name if Path(config.model).exists() else config.model,
        "encoder_source": config.model,
        "encoder_class": type(network).__name__,
        "encoder_library": f"transformers {transformers.__version__}",
        "normalised": bool(config.normalize),
        "items_with_image": len(rows),
        "items_without_image_field": files.no_field,
        "items_with_image_file_not_found": files.not_found,
    }
    return values, files.present, attrs
