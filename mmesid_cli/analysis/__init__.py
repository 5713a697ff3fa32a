"""The paper's two analyses as plain functions on arrays (no file I/O).

- :mod:`.concordance`: formula 9 (docs/method.md §4), Kendall's tau between the similarity order
  of a user's history in the pretrained space and in a SID space (or any second table);
- :mod:`.collapse`: the singular value spectrum and effective rank of an item-token matrix
  (docs/method.md §1, embedding collapse).

``mmesid_cli.cli.concordance`` and ``mmesid_cli.cli.collapse`` read the files, call these and
write the reports.
"""
