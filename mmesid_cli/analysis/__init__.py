"""The paper's two analyses as plain functions on arrays, and the spaces they compare.

- :mod:`.concordance`: formula 9 (docs/method.md §4), Kendall's tau between the similarity order
  of a user's history in the pretrained space and in a SID space (or any second table);
- :mod:`.collapse`: the singular value spectrum and effective rank of an item-token matrix
  (docs/method.md §1, embedding collapse).

- :mod:`.spaces`: the spaces these compare, read from artifacts through
  :mod:`mmesid_cli.artifacts` and aligned to a reference item order (SID spaces from
  codebooks + codes, second tables, a fine-tuned run's item tokens).

``mmesid_cli.cli.concordance`` and ``mmesid_cli.cli.collapse`` parse the options, call these and
write the reports.
"""
