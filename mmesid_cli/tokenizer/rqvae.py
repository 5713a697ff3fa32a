"""MM-RQ-VAE: one RQ-VAE per modality, trained jointly (docs/method.md §3).

Per modality m (nothing shared between modalities except the alignment loss):

    z_m   = Enc_m(x_m)                 MLP d_m → hidden… → e_dim, ReLU between layers
    z_q,m = RQ_m(z_m)                  L levels × K codes, z_q = Σ_l c_l, straight-through
    x̂_m  = Dec_m(z_q,m)               MLP e_dim → …hidden → d_m (the encoder mirrored)

and the loss, summed over modalities:

    L = λ_rec Σ_m Rec(x̂_m, x_m) + λ_vq Σ_m VQ_m + λ_align Σ_{m ≠ collab} InfoNCE(z_q,collab, z_q,m)

Rec is the squared MMD (:func:`~mmesid_cli.tokenizer.losses.mmd2`) or, as the paper's ablation,
the MSE. The item's SID for modality m is its code tuple (k_1 … k_L).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mmesid_cli.tokenizer.config import TokenizerConfig
from mmesid_cli.tokenizer.losses import info_nce, reconstruction_loss
from mmesid_cli.tokenizer.quantizer import Quantized, ResidualQuantizer


class MLP(nn.Sequential):
    """Linear layers with ReLU between them and none after the last (reference ``MLPLayers``).

    Weights are Xavier-normal and biases zero, as in the reference.
    """

    def __init__(self, dims: list[int]) -> None:
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            linear = nn.Linear(d_in, d_out)
            nn.init.xavier_normal_(linear.weight)
            nn.init.zeros_(linear.bias)
            layers.append(linear)
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


@dataclass
class ModalityOutput:
    rows: torch.Tensor  # (b,) batch rows this modality has an input for
    z: torch.Tensor  # (b, e_dim) encoder output
    quantized: Quantized  # z_q (b, e_dim), codes (b, L), vq_loss ()
    x_hat: torch.Tensor  # (b, d_m) decoder output


@dataclass
class LossParts:
    total: torch.Tensor
    rec: dict[str, torch.Tensor] = field(default_factory=dict)
    vq: dict[str, torch.Tensor] = field(default_factory=dict)
    align: dict[str, torch.Tensor] = field(default_factory=dict)

    def as_floats(self) -> dict[str, float]:
        out = {"total": float(self.total.detach())}
        for name, parts in (("rec", self.rec), ("vq", self.vq), ("align", self.align)):
            out.update({f"{name}.{m}": float(v.detach()) for m, v in parts.items()})
        return out


class MMRQVAE(nn.Module):
    """The multimodal tokeniser: encoders, residual quantisers and decoders per modality."""

    def __init__(self, config: TokenizerConfig, input_dims: dict[str, int]) -> None:
        super().__init__()
        missing = [m for m in config.modalities if m not in input_dims]
        if missing:
            raise ValueError(f"no input dimension for modalities {missing}")
        self.config = config
        self.input_dims = {m: int(input_dims[m]) for m in config.modalities}
        self.encoders = nn.ModuleDict()
        self.quantizers = nn.ModuleDict()
        self.decoders = nn.ModuleDict()
        for m in config.modalities:
            dims = [self.input_dims[m], *config.hidden, config.e_dim]
            self.encoders[m] = MLP(dims)
            self.quantizers[m] = ResidualQuantizer(
                config.levels, config.codebook_size, config.e_dim
            )
            self.decoders[m] = MLP(dims[::-1])

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.config.modalities)

    def forward(
        self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None
    ) -> dict[str, ModalityOutput]:
        """Run every modality on a batch. inputs[m]: (B, d_m); present[m]: (B,) bool or absent."""
        cfg = self.config
        sinkhorn_levels = cfg.sinkhorn_level_set()
        outputs = {}
        for m in self.modalities:
            x = inputs[m]
            rows = _present_rows(present, m, x)
            x = x[rows]
            z = self.encoders[m](x)  # (b, e_dim)
            quantized = self.quantizers[m](
                z,
                cfg.beta,
                sinkhorn_levels,
                cfg.sinkhorn_epsilon,
                cfg.sinkhorn_iters,
                cfg.commit_all_levels,
            )
            x_hat = self.decoders[m](quantized.z_q)  # (b, d_m)
            outputs[m] = ModalityOutput(rows=rows, z=z, quantized=quantized, x_hat=x_hat)
        return outputs

    def loss(
        self, inputs: dict[str, torch.Tensor], outputs: dict[str, ModalityOutput]
    ) -> LossParts:
        """L = λ_rec Σ Rec + λ_vq Σ VQ + λ_align Σ InfoNCE(z_q,anchor, z_q,m) (docs/method.md §3)."""
        cfg = self.config
        total = next(iter(outputs.values())).z.new_zeros(())
        parts = LossParts(total=total)
        for m, out in outputs.items():
            parts.rec[m] = reconstruction_loss(
                cfg.recon, out.x_hat, inputs[m][out.rows], cfg.mmd_alphas
            )
            parts.vq[m] = out.quantized.vq_loss
        anchor = outputs.get(cfg.align_anchor)
        if anchor is not None and cfg.align_weight > 0:
            for m, out in outputs.items():
                if m == cfg.align_anchor:
                    continue
                query, key = _shared_rows(anchor, out)
                if query.shape[0] >= 2:
                    parts.align[m] = info_nce(query, key, cfg.align_temperature)
        total = cfg.rec_weight * sum(parts.rec.values()) + cfg.vq_weight * sum(parts.vq.values())
        if parts.align:
            total = total + cfg.align_weight * sum(parts.align.values())
        parts.total = total
        return parts

    @torch.no_grad()
    def latent(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """z = Enc_m(x). (B, d_m) → (B, e_dim)."""
        return self.encoders[modality](x)

    @torch.no_grad()
    def encode(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """SIDs by nearest codes (no Sinkhorn). (B, d_m) → (B, L)."""
        return self.quantizers[modality].encode(self.encoders[modality](x))

    @torch.no_grad()
    def decode(self, modality: str, codes: torch.Tensor) -> torch.Tensor:
        """x̂ = Dec_m(Σ_l C_l[k_l]). (B, L) → (B, d_m)."""
        return self.decoders[modality](self.codebook_sum(modality, codes))

    @torch.no_grad()
    def codebook_sum(self, modality: str, codes: torch.Tensor) -> torch.Tensor:
        """z_q = Σ_l C_l[k_l]. (B, L) → (B, e_dim)."""
        books = self.quantizers[modality].codebooks
        return sum(book[codes[:, i]] for i, book in enumerate(books))  # type: ignore[return-value]

    def codebooks(self, modality: str) -> list[torch.Tensor]:
        """The L codebooks of a modality, level 1 first, each (K, e_dim)."""
        return [book.detach() for book in self.quantizers[modality].codebooks]


def _present_rows(present: dict[str, torch.Tensor] | None, m: str, x: torch.Tensor) -> torch.Tensor:
    if present is None or m not in present:
        return torch.arange(x.shape[0], device=x.device)
    return torch.nonzero(present[m].to(x.device)).flatten()


def _shared_rows(
    anchor: ModalityOutput, other: ModalityOutput
) -> tuple[torch.Tensor, torch.Tensor]:
    """The anchor's and the other modality's z_q on the batch rows both have (same order)."""
    if anchor.rows.shape == other.rows.shape and torch.equal(anchor.rows, other.rows):
        return anchor.quantized.z_q, other.quantized.z_q
    both = torch.isin(anchor.rows, other.rows)
    keep_other = torch.isin(other.rows, anchor.rows)
    return anchor.quantized.z_q[both], other.quantized.z_q[keep_other]
