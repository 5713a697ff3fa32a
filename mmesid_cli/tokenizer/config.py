"""The one configuration of the MM-RQ-VAE tokeniser (docs/method.md §3).

Defaults are the reference hyper-parameters (the `paper` preset), with two deliberate
exceptions, each one setting away from the reference:

- the commitment weight ``beta`` is the textbook 0.25: the reference ends up with 0.01 only
  by passing its alignment weight by mistake (``REFERENCE_BETA``);
- ``commit_all_levels``: the commitment of every level reaches the encoder, as the VQ
  formula of docs/method.md §3 says; the reference's straight-through residuals detach every
  level after the first.

:data:`PRESETS` holds named variations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

REFERENCE_BETA = 0.01  # what the reference code actually uses (its alignment weight)

RECON_LOSSES = ("mmd", "mse")
KMEANS_INITS = ("balanced", "plain", "none")
KEEP_CHOICES = ("best", "last")

# Settings that only say how long to train: a checkpoint may be resumed with other values.
DURATION_FIELDS = ("epochs", "patience")


@dataclass
class TokenizerConfig:
    """Every knob of the tokeniser; the defaults reproduce the reference run (docs/method.md §3)."""

    # --- model -------------------------------------------------------------------------
    modalities: tuple[str, ...] = ("collab", "text", "image")
    e_dim: int = 4096  # code dimension = the LLM hidden size, so codes feed the LLM directly
    hidden: tuple[int, ...] = (4096, 4096, 4096)  # encoder widths; the decoder mirrors them
    levels: int = 4  # L
    codebook_size: int = 256  # K

    # --- codebook initialisation and assignment ------------------------------------------
    kmeans_init: str = "balanced"  # the reference uses constrained (size-balanced) k-means
    kmeans_iters: int = 10  # the reference's KMeansConstrained(max_iter=10)
    sinkhorn_levels: tuple[int, ...] = (-1,)  # 1-based levels; negative counts from the end
    sinkhorn_epsilon: float = 0.003
    sinkhorn_iters: int = 50
    dead_code_restart: bool = False  # not in the reference; the CPU preset turns it on

    # --- losses (docs/method.md §3: L = λ_rec Σ Rec + λ_vq Σ VQ + λ_align Σ InfoNCE) ---------
    recon: str = "mmd"  # "mse" is the paper's ablation
    mmd_alphas: tuple[float, ...] = (0.5,)  # σ² = α · mean pairwise squared distance
    beta: float = 0.25  # commitment weight; the reference's effective value is 0.01
    # every level's commitment reaches the encoder (the formula); the reference detaches the
    # residuals after level 1, so only level 1 commits (False reproduces it)
    commit_all_levels: bool = True
    rec_weight: float = 3.0  # λ_rec
    vq_weight: float = 1.0  # λ_vq
    align_weight: float = 0.01  # λ_align
    align_temperature: float = 0.1
    align_anchor: str = "collab"  # the query modality of InfoNCE

    # --- optimisation ----------------------------------------------------------------------
    lr: float = 2e-4
    weight_decay: float = 1e-4
    batch_size: int = 1024
    epochs: int = 20000
    patience: int = 2000  # early stop when the epoch loss has not improved for this many epochs
    keep: str = "best"  # weights to keep at the end: lowest epoch loss (reference) or last
    seed: int = 42

    extra: dict[str, object] = field(default_factory=dict)  # free-form notes, kept in the file

    def __post_init__(self) -> None:
        self.modalities = tuple(self.modalities)
        self.hidden = tuple(int(h) for h in self.hidden)
        self.sinkhorn_levels = tuple(int(v) for v in self.sinkhorn_levels)
        self.mmd_alphas = tuple(float(a) for a in self.mmd_alphas)

    def validate(self) -> None:
        """Raise ``ValueError`` with a user-readable message for an impossible setting."""
        checks = [
            (len(self.modalities) > 0, "at least one modality is needed"),
            (len(set(self.modalities)) == len(self.modalities), "a modality is listed twice"),
            (self.e_dim > 0, "e_dim must be positive"),
            (all(h > 0 for h in self.hidden), "hidden sizes must be positive"),
            (self.levels > 0, "levels must be positive"),
            (self.codebook_size > 1, "codebook_size must be at least 2"),
            (self.kmeans_init in KMEANS_INITS, f"kmeans_init must be one of {KMEANS_INITS}"),
            (self.kmeans_iters >= 0, "kmeans_iters must be >= 0"),
            (self.recon in RECON_LOSSES, f"recon must be one of {RECON_LOSSES}"),
            (len(self.mmd_alphas) > 0 and min(self.mmd_alphas) > 0, "MMD alphas must be > 0"),
            (self.sinkhorn_epsilon > 0, "sinkhorn_epsilon must be > 0"),
            (self.sinkhorn_iters > 0, "sinkhorn_iters must be > 0"),
            (self.beta >= 0, "beta must be >= 0"),
            (self.align_temperature > 0, "align_temperature must be > 0"),
            (self.lr >= 0, "lr must be >= 0"),
            (self.batch_size > 1, "batch_size must be at least 2 (MMD needs pairs)"),
            (self.epochs >= 0, "epochs must be >= 0"),
            (self.patience > 0, "patience must be > 0"),
            (self.keep in KEEP_CHOICES, f"keep must be one of {KEEP_CHOICES}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        for level in self.sinkhorn_levels:
            if level == 0 or abs(level) > self.levels:
                raise ValueError(
                    f"sinkhorn level {level} is outside 1..{self.levels} (or -1..-{self.levels})"
                )

    def sinkhorn_level_set(self) -> set[int]:
        """The 1-based levels that use Sinkhorn-balanced assignment during training."""
        return {v if v > 0 else self.levels + 1 + v for v in self.sinkhorn_levels}

    def to_dict(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TokenizerConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})  # type: ignore[arg-type]

    def replace(self, **changes: object) -> TokenizerConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# Named variations of the defaults. `paper` is the reference run (docs/method.md §3). `cpu` trains
# the Beauty set (12,086 items, text + collab) in minutes on 2 CPU cores: codes of the default
# SmolLM2-135M hidden size (576), one hidden layer of 512, 60 epochs at most with a patience of
# 10, and dead-code restarts because a short run cannot wait for unused codes to come back.
# Its learning rate, 3e-4, is close to the reference's 2e-4: at 1e-3 the encoder outruns the
# codebooks (the VQ loss grows from the second epoch on, measured on Beauty).
PRESETS: dict[str, dict[str, object]] = {
    "paper": {},
    "cpu": {
        "e_dim": 576,
        "hidden": (512,),
        "lr": 3e-4,
        "batch_size": 1024,
        "epochs": 60,
        "patience": 10,
        "dead_code_restart": True,
    },
}


def preset_config(name: str, **overrides: object) -> TokenizerConfig:
    """The config of a named preset, with explicit settings applied on top."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    values: dict[str, object] = dict(PRESETS[name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TokenizerConfig(**values)  # type: ignore[arg-type]
