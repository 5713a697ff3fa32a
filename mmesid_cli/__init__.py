"""mmesid: the MME-SID recommender (CIKM 2025) as composable, tested tools.

The library is usable without the CLI: ``mmesid_cli.tokenizer`` (MMD RQ-VAE),
``mmesid_cli.analysis`` (formula-9 concordance, embedding collapse), ``mmesid_cli.metrics``
(full-ranking HR/NDCG/MRR), ``mmesid_cli.data`` (items, sequences, leave-one-out split).
"""

__version__ = "0.1.0"
