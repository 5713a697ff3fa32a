"""Readers and writers of mmesid's files; nothing else in mmesid opens h5py or safetensors.

- :mod:`.embeddings`: ``embeddings.h5`` (item ids, one table per modality);
- :mod:`.sids`: ``sids.h5`` (the codes of every item per modality);
- :mod:`.weights`: safetensors files (tokeniser, SASRec, heads) with their config;
- :mod:`.reports`: JSON reports;
- :mod:`.atomic`: the atomic write every writer goes through.

Every reader validates the format tag, version, shapes, dtypes and ids and raises
:class:`mmesid_cli.errors.UserError` naming the file. Items and sequences (JSONL) are
owned by :mod:`mmesid_cli.data.records`. Submodules are imported on use, so reading a JSONL
file never imports torch.
"""
