"""Published figures that mmesid's reports print beside their own (never used in computation).

Sources: the table of published Beauty numbers in docs/method.md §6 (each under its own
protocol, with where it was published) and the
MME-SID paper's Kendall tau figures (docs/method.md §1, *paper, unverified*).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PublishedRanking:
    system: str
    metrics: dict[str, float]  # HR@K (= R@K with one target) and NDCG@K
    protocol: str


def _row(system: str, r5: float, r10: float | None, n5: float, n10: float | None, protocol: str):
    metrics = {"HR@5": r5, "NDCG@5": n5}
    if r10 is not None:
        metrics["HR@10"] = r10
    if n10 is not None:
        metrics["NDCG@10"] = n10
    return PublishedRanking(system, metrics, protocol)


# Amazon Beauty (2014, 5-core, leave-one-out); sources in docs/method.md §6.
RANKING = {
    "beauty": [
        _row("TIGER (paper)", 0.0454, 0.0648, 0.0321, 0.0384, "beam search over SIDs"),
        _row("SASRec (tuned, Cornac)", 0.0508, 0.0740, 0.0348, 0.0423, "full ranking"),
        _row("SASRec (GenRec)", 0.0469, 0.0688, 0.0305, 0.0375, "full ranking"),
        _row("LC-Rec, Qwen3-1.7B (GenRec)", 0.0525, 0.0791, 0.0352, 0.0438, "beam search"),
        _row("RPG (paper)", 0.0550, 0.0809, 0.0381, 0.0464, "graph decoding"),
        _row("E4SRec (third-party report)", 0.0525, None, 0.0360, None, "full ranking"),
    ]
}

# The paper's Kendall tau (formula 9), by the space labels the example pipeline uses.
PAPER_TAU = {
    "mse": 0.3714,  # RQ-VAE trained with MSE reconstruction
    "mmd": 0.4436,  # RQ-VAE trained with MMD reconstruction
    "finetuned-codebook-init": 0.2727,  # SID tables after fine-tuning, codebook init
    "finetuned-random-init": 0.0508,  # SID tables after fine-tuning, random init
}
