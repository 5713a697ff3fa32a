"""Reading and cross-checking the fine-tuning inputs; samples and left padding."""

from __future__ import annotations

import numpy as np
import pytest

from mmesid_cli.artifacts.sids import Sids, read_sids, write_sids
from mmesid_cli.data.records import read_items, read_sequences
from mmesid_cli.data.split import item_frequency, training_samples
from mmesid_cli.errors import UserError
from mmesid_cli.llm4sr import TrainingSet, left_pad, load_inputs
from tests.llm4sr.tiny import tiny_files


def test_inputs_align_sids_to_embedding_rows_by_item_id(files):
    inputs = load_inputs(files.sequences, files.embeddings, files.tokenizer, files.sids)
    assert inputs.modalities == ["collab", "text"]
    assert inputs.item_ids == files.item_ids
    for m in ("collab", "text"):
        np.testing.assert_array_equal(inputs.sids[m].codes, files.codes[m])
        assert inputs.sids[m].levels == 2 and inputs.sids[m].codebook_size == 8
    reference = read_sequences(files.sequences, read_items(files.items))
    np.testing.assert_array_equal(inputs.frequency, item_frequency(reference))


def test_sid_init_none_needs_no_tokenizer(files):
    inputs = load_inputs(files.sequences, files.embeddings, sid_init="none", modalities=["collab"])
    assert inputs.modalities == ["collab"] and inputs.sids == {}
    with pytest.raises(UserError, match="needs --tokenizer and --sids"):
        load_inputs(files.sequences, files.embeddings, sid_init="codebook")


def test_sids_for_items_missing_from_the_embeddings(tmp_path):
    files = tiny_files(tmp_path, extra_sid_items=2)
    with pytest.raises(
        UserError, match=r"sids.h5: gives SIDs for 2 items that are not in .*'NEW0'"
    ):
        load_inputs(files.sequences, files.embeddings, files.tokenizer, files.sids)


def test_embedded_items_without_sids(tmp_path):
    files = tiny_files(tmp_path, drop_sid_items=3)
    with pytest.raises(UserError, match="has no SID for 3 items"):
        load_inputs(files.sequences, files.embeddings, files.tokenizer, files.sids)


def test_tokenizer_modalities_must_match(tmp_path):
    files = tiny_files(tmp_path, modalities=("text",))
    with pytest.raises(UserError, match="tokeniser has no 'collab' modality"):
        load_inputs(
            files.sequences, files.embeddings, files.tokenizer, files.sids, ["collab", "text"]
        )
    inputs = load_inputs(files.sequences, files.embeddings, files.tokenizer, files.sids)
    assert inputs.modalities == ["text"]  # default: the tokeniser's modalities


def test_tokenizer_input_dims_must_match_the_embeddings(tmp_path):
    files = tiny_files(tmp_path, tokenizer_dims={"collab": 16, "text": 12})
    with pytest.raises(UserError, match="trained on 16-d embeddings"):
        load_inputs(files.sequences, files.embeddings, files.tokenizer, files.sids)


def test_codes_beyond_the_codebook(tmp_path):
    files = tiny_files(tmp_path)
    sids = read_sids(files.sids)
    sids.codes["text"][0, 1] = 8  # K = 8: codes are 0…7
    write_sids(files.sids, Sids(item_ids=sids.item_ids, codes=sids.codes))
    with pytest.raises(UserError, match="beyond the codebook size 8"):
        load_inputs(files.sequences, files.embeddings, files.tokenizer, files.sids)


def test_unknown_modality_in_embeddings(files):
    with pytest.raises(UserError, match="has no 'image' embeddings"):
        load_inputs(files.sequences, files.embeddings, sid_init="none", modalities=["image"])


def test_training_set_subset_and_epoch_orders(files):
    sequences = read_sequences(files.sequences, read_items(files.items))
    full = TrainingSet(sequences)
    assert len(full) == len(training_samples(sequences))
    subset = TrainingSet(sequences, max_samples=20, seed=3)
    again = TrainingSet(sequences, max_samples=20, seed=3)
    assert len(subset) == 20
    np.testing.assert_array_equal(subset.targets, again.targets)
    assert sorted(subset.order(0)) == list(range(20))
    np.testing.assert_array_equal(subset.order(1), again.order(1))
    assert not np.array_equal(subset.order(0), subset.order(1))


def test_left_pad_keeps_the_most_recent_items():
    items, mask = left_pad([np.array([5, 6, 7, 8]), np.array([2]), np.array([], dtype=np.int64)], 3)
    assert items.tolist() == [[6, 7, 8], [0, 0, 2], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
