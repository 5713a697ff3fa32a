"""Image embeddings with a tiny random CLIP saved to disk and real photos from skimage.data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmesid_cli.data.records import read_items
from mmesid_cli.encoders.image import ImageEncoderConfig, encode_images, find_images
from mmesid_cli.errors import UserError

PHOTOS = {
    "astronaut": ".png",
    "coffee": ".jpg",
    "chelsea": ".jpeg",
    "camera": ".png",
}  # camera is grey


def save_tiny_clip(folder: Path) -> Path:
    """A randomly initialised CLIPModel (32-px images, 16-d projection) and its PIL processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": 99,
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 37,
            "max_position_embeddings": 16,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 37,
        },
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


def write_photo_items(folder: Path) -> Path:
    """items.jsonl: four real photos, one item without an image field, one with a missing file."""
    import skimage.data
    from PIL import Image

    (folder / "img").mkdir(parents=True, exist_ok=True)
    records = []
    for name, suffix in PHOTOS.items():
        Image.fromarray(getattr(skimage.data, name)()).save(folder / "img" / f"{name}{suffix}")
        records.append({"item_id": name, "title": name, "image": f"img/{name}{suffix}"})
    records.insert(2, {"item_id": "no-field", "title": "x"})
    records.append({"item_id": "gone", "title": "y", "image": "img/gone.jpg"})
    items = folder / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in records))
    return items


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture
def photo_items(tmp_path) -> Path:
    return write_photo_items(tmp_path / "data")


def _independent_features(clip_dir: Path, image_paths: list[Path]) -> np.ndarray:
    """CLIP's projected image embedding, computed from the parts (vision tower + projection)."""
    from PIL import Image
    from transformers import CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model = CLIPModel.from_pretrained(clip_dir).eval()
    processor = CLIPImageProcessorPil.from_pretrained(clip_dir)
    images = [Image.open(p).convert("RGB") for p in image_paths]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return model.visual_projection(
            model.vision_model(pixel_values=pixels).pooler_output
        ).numpy()


def test_photos_are_embedded_and_missing_images_get_zero_rows(clip_dir, photo_items) -> None:
    items = read_items(photo_items)
    files = find_images(items)
    assert (files.no_field, files.not_found) == (1, 1)
    seen = []
    config = ImageEncoderConfig(model=str(clip_dir), batch_size=3, device="cpu")
    values, present, attrs = encode_images(items, files, config, progress=seen.append)

    assert values.shape == (6, 16) and values.dtype == np.float32
    assert present.tolist() == [True, True, False, True, True, False]
    assert not values[~present].any() and np.abs(values[present]).sum(axis=1).min() > 0
    paths = [photo_items.parent / "img" / f"{n}{s}" for n, s in PHOTOS.items()]
    np.testing.assert_allclose(values[present], _independent_features(clip_dir, paths), atol=1e-5)
    assert sum(seen) == 4
    assert attrs["items_with_image"] == 4 and attrs["items_without_image_field"] == 1
    assert attrs["items_with_image_file_not_found"] == 1
    assert "torchvision" not in sys.modules  # it does not work beside this torch


def test_normalize_gives_unit_rows_and_keeps_zero_rows(clip_dir, photo_items) -> None:
    items = read_items(photo_items)
    config = ImageEncoderConfig(model=str(clip_dir), device="cpu", normalize=True)
    values, present, _ = encode_images(items, find_images(items), config)
    np.testing.assert_allclose(np.linalg.norm(values[present], axis=1), 1.0, atol=1e-5)
    assert not values[~present].any()


def test_require_all_fails_on_the_first_item_without_an_image(photo_items) -> None:
    with pytest.raises(UserError, match=r"2 of 6 items have no image \(first: item 'no-field'"):
        find_images(read_items(photo_items), require_all=True)


def test_an_unreadable_image_names_the_item(photo_items) -> None:
    (photo_items.parent / "img" / "coffee.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(UserError, match=r"item 'coffee': unreadable image .*coffee\.jpg"):
        find_images(read_items(photo_items))


def test_no_model_or_an_unknown_model_path_is_a_user_error(tmp_path, photo_items) -> None:
    from mmesid_cli.encoders.image import load_image_model

    with pytest.raises(UserError, match="needs --model"):
        load_image_model("")
    with pytest.raises(UserError, match="no such model folder"):
        load_image_model(str(tmp_path / "no" / "clip"))


def test_a_truncated_image_fails_while_encoding_and_names_the_item(clip_dir, photo_items) -> None:
    path = photo_items.parent / "img" / "coffee.jpg"
    path.write_bytes(path.read_bytes()[:2000])  # the header survives, the pixels do not
    items = read_items(photo_items)
    files = find_images(items)
    with pytest.raises(UserError, match=r"item 'coffee': unreadable image"):
        encode_images(items, files, ImageEncoderConfig(model=str(clip_dir), device="cpu"))
