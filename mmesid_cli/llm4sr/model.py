"""The MME-SID LLM4SR model (docs/method.md §5), top to bottom as the paper builds it.

Notation: N items, M modalities present (of collab, image, text), H the LLM hidden size,
L SID levels with K codes each, B users in a batch, n history items per user (left padded).

1. **Item token** (docs/method.md §5, the equation for x_i)::

       x_i = GELU( MLP( [ W_m e_m(i) ; S_m(i) ]  over the present modalities m ) )   (mlp)
       x_i = Σ_m W_m e_m(i) + Σ_m S_m(i)                                            (linear)
       S_m(i) = Σ_l E^m_l[ k^m_l(i) ]

   e_m are frozen pretrained embeddings, W_m trainable linear maps d_m → H, E^m_l the L
   trainable K × H SID tables of modality m, initialised from the tokeniser's codebooks so
   that at step 0 S_m(i) is exactly the item's quantised latent z_q (docs/method.md §3). MLP is
   Linear(2MH → MH), ReLU, Linear(MH → H) (6H → 3H → H for three modalities); without SID
   inputs it is Linear(MH → MH), ReLU, Linear(MH → H). The ``linear`` map is E4SRec's input
   (one modality, no SIDs: x_i = W_c e_c(i)).
2. **Sequence**: [instruction tokens] + [x_{h_1} … x_{h_n}] (+ [response tokens] for the
   ``last`` objective); the history block is left padded and masked, and position ids skip
   the padding so a padded row is the same computation as the unpadded sequence. The LLM is
   an encoder (its LM head is never used): h_t is the last hidden state at item position t
   (``all-positions``: every position predicts the next item, one causal forward per user)
   or at the last response token (``last``: the paper's one-target prompt).
3. **Multimodal frequency-aware fusion** (the paper's formula 17)::

       f_j = minmax_j( log(1 + freq_j) )
       w_j = softmax( g(f_j) / T ),   g: 1 → 64 → 10 → 64 → (1 + M)
       s_j = w_j1 ( ⟨ĥ, E_out[j]⟩ + b_j ) + Σ_m w_j,m ⟨ĥ, A_m e_m(j)⟩

   ``head="calibrated"`` (the default) starts the model at the popularity prior and keeps
   every part of formula 17 trainable: ĥ = (h − μ) / σ with μ, σ measured in one forward at
   initialisation (:func:`calibrate_head`; h is ~99% the same vector for every user), b_j
   an item bias set so that s_j = log p_j (training popularity, add-one smoothed) at step 0,
   E_out and the maps A_m: H → d_m zero, and g's last layer zero so w starts uniform, with
   T = 1. The bias sits in the ID head, so the gate's gradient is not zero at step 0: it
   learns, per popularity, how much an item's own parameters count against its content.
   ``head="paper"`` is the reference: raw h, no bias, random E_out, A_m tied to the input
   projections W_m (⟨h, W_m e_m(j)⟩), g with random layers, T = 1e-3 (its softmax is one-hot
   for every item and its gradient is zero in float32: formula 17 never trains).
   ``fusion=False`` scores with one head: the ID head (E_out + b), or one modality's
   (⟨ĥ, A_m e_m(j)⟩ + b_j; E4SRec scores through its collab ID table this way).
4. **Loss**: cross-entropy of the full softmax over all N items, averaged over labels.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmesid_cli.llm4sr.data import left_pad

CANONICAL_ORDER = ("collab", "image", "text")  # the reference's input order [c; v; t]


def ordered_modalities(modalities: Sequence[str]) -> list[str]:
    """Modalities in the reference order (collab, image, text), others after, alphabetical."""
    known = [m for m in CANONICAL_ORDER if m in modalities]
    return known + sorted(m for m in modalities if m not in CANONICAL_ORDER)


class SIDEmbedding(nn.Module):
    """S_m(i) = Σ_l E_l[k_l(i)]: the SID embedding of one modality (docs/method.md §5).

    The L tables are K × table_dim. When table_dim differs from the LLM hidden size H (a
    tokeniser trained with e_dim ≠ H), a trainable bias-free linear map P: table_dim → H
    follows the sum, so S(i) = P Σ_l E_l[k_l] = Σ_l (E_l Pᵀ)[k_l]: the tables the LLM sees
    are E_l Pᵀ (K × H), which :meth:`used_tables` returns.
    """

    def __init__(self, codes: torch.Tensor, codebook_size: int, table_dim: int, hidden: int):
        super().__init__()
        self.register_buffer("codes", codes.long())  # (N, L), column l-1 is level l
        levels = codes.shape[1]
        self.tables = nn.ModuleList(nn.Embedding(codebook_size, table_dim) for _ in range(levels))
        self.project = nn.Linear(table_dim, hidden, bias=False) if table_dim != hidden else None

    @torch.no_grad()
    def init_from_codebooks(self, codebooks: Sequence[torch.Tensor]) -> None:
        """E_l := codebook_l, so S(i) = z_q(i) = Σ_l codebook_l[k_l(i)] at step 0."""
        for table, codebook in zip(self.tables, codebooks, strict=True):
            table.weight.copy_(codebook)
        if self.project is not None:
            # An orthogonal map keeps the codebook geometry (norms, angles) at step 0.
            nn.init.orthogonal_(self.project.weight)

    @torch.no_grad()
    def init_random(self, std: float, generator: torch.Generator | None = None) -> None:
        for table in self.tables:
            table.weight.normal_(0.0, std, generator=generator)

    def latent(self, items: torch.Tensor) -> torch.Tensor:
        """Σ_l E_l[k_l(i)] before the map P: (...,) item rows → (..., table_dim)."""
        codes = self.codes[items]  # (..., L)
        return sum(table(codes[..., level]) for level, table in enumerate(self.tables))

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # (...,) → (..., H)
        latent = self.latent(items)
        return latent if self.project is None else self.project(latent)

    def used_tables(self) -> list[torch.Tensor]:
        """The L tables as the LLM input sees them (K × H each)."""
        weights = [table.weight for table in self.tables]
        if self.project is None:
            return weights
        return [self.project(weight) for weight in weights]


ITEM_MAPS = ("auto", "mlp", "linear")
HEADS = ("calibrated", "paper")
OBJECTIVES = ("all-positions", "last")


def resolve_output(output: str, fusion: bool, modalities: Sequence[str], sids: bool) -> str:
    """The one scoring head without fusion. ``auto``: E4SRec's (the collab table, which it
    reads through a map from h) for collab alone without SIDs; E_out (``id``) otherwise."""
    if output not in ("auto", "id") and output not in modalities:
        raise ValueError(
            f"--output-head must be auto, id or one of {', '.join(modalities)}, not {output!r}"
        )
    if fusion:
        if output not in ("auto", "id"):
            raise ValueError(
                "--output-head chooses the one head of --no-fusion; with fusion all heads score"
            )
        return "id"
    if output == "auto":
        return "collab" if list(modalities) == ["collab"] and not sids else "id"
    return output


def resolve_item_map(item_map: str, n_modalities: int, sids: bool) -> str:
    """``auto``: E4SRec's linear map for one modality without SIDs, the paper's MLP otherwise."""
    if item_map not in ITEM_MAPS:
        raise ValueError(f"item_map must be one of {ITEM_MAPS}, not {item_map!r}")
    if item_map == "auto":
        return "linear" if n_modalities == 1 and not sids else "mlp"
    return item_map


class ItemTokens(nn.Module):
    """x_i: GELU(MLP([W_m e_m(i); S_m(i)])) or Σ_m (W_m e_m(i) + S_m(i)) (docs/method.md §5)."""

    def __init__(
        self,
        embeddings: dict[str, torch.Tensor],
        hidden: int,
        sids: dict[str, SIDEmbedding] | None = None,
        present: dict[str, torch.Tensor] | None = None,
        item_map: str = "mlp",
    ):
        super().__init__()
        self.modalities = ordered_modalities(list(embeddings))
        self.hidden = hidden
        self.embeddings = nn.ParameterDict(  # e_m: frozen pretrained tables, (N, d_m)
            {m: nn.Parameter(embeddings[m].float(), requires_grad=False) for m in self.modalities}
        )
        presence = present or {}
        for m in self.modalities:  # (N,) 1.0 where item has an input (e.g. an image)
            mask = presence.get(m)
            mask = torch.ones(embeddings[m].shape[0]) if mask is None else mask.float()
            self.register_buffer(f"present_{m}", mask)
        self.projections = nn.ModuleDict(  # W_m: d_m → H
            {m: nn.Linear(embeddings[m].shape[1], hidden) for m in self.modalities}
        )
        self.sids = nn.ModuleDict(sids or {})
        if self.sids and set(self.sids) != set(self.modalities):
            raise ValueError("SID embeddings are needed for every modality, or for none")
        self.item_map = resolve_item_map(item_map, len(self.modalities), bool(self.sids))
        self.mlp = None
        if self.item_map == "mlp":
            width = len(self.modalities) * hidden * (2 if self.sids else 1)
            self.mlp = nn.Sequential(  # 2MH → MH → H (6H → 3H → H for three modalities)
                nn.Linear(width, len(self.modalities) * hidden),
                nn.ReLU(),
                nn.Linear(len(self.modalities) * hidden, hidden),
            )

    @property
    def n_items(self) -> int:
        return int(next(iter(self.embeddings.values())).shape[0])

    def projected(self, modality: str, items: torch.Tensor | None = None) -> torch.Tensor:
        """W_m e_m(i) for the given rows (all N items when ``items`` is None): (..., H)."""
        table = self.embeddings[modality]
        present = getattr(self, f"present_{modality}")
        if items is None:
            return self.projections[modality](table) * present[:, None]
        return self.projections[modality](table[items]) * present[items][..., None]

    def inner_products(self, modality: str, h: torch.Tensor) -> torch.Tensor:
        """⟨h, W_m e_m(j)⟩ for every item j: (B, H) → (B, N), the paper's tied head.

        Computed as ⟨W_mᵀ h, e_m(j)⟩ + ⟨h, b_m⟩, so the N × H table W_m e_m is never built:
        B·H·d_m + B·d_m·N multiply-adds per forward instead of N·d_m·H.
        """
        projection = self.projections[modality]
        present = getattr(self, f"present_{modality}")
        scores = (h @ projection.weight) @ self.embeddings[modality].T  # (B, d_m) @ (d_m, N)
        return (scores + (h @ projection.bias)[:, None]) * present

    def parts(self, items: torch.Tensor) -> list[torch.Tensor]:
        """[W_c e_c(i); S_c(i); W_v e_v(i); S_v(i); W_t e_t(i); S_t(i)], each (..., H)."""
        out = []
        for m in self.modalities:
            out.append(self.projected(m, items))
            if self.sids:
                out.append(self.sids[m](items))
        return out

    def forward(self, items: torch.Tensor) -> torch.Tensor:  # (...,) rows → (..., H)
        parts = self.parts(items)
        if self.mlp is None:
            return torch.stack(parts).sum(dim=0)
        return F.gelu(self.mlp(torch.cat(parts, dim=-1)))


def frequency_feature(frequency: np.ndarray | torch.Tensor) -> torch.Tensor:
    """f_j = minmax_j(log(1 + freq_j)) ∈ [0, 1] (formula 17); all zeros if every freq is equal."""
    logged = torch.log1p(torch.as_tensor(frequency, dtype=torch.float64))
    span = logged.max() - logged.min()
    scaled = (logged - logged.min()) / span if span > 0 else torch.zeros_like(logged)
    return scaled.float()


def log_popularity(frequency: np.ndarray | torch.Tensor) -> torch.Tensor:
    """log p_j with p_j = (freq_j + 1) / (Σ freq + N): the add-one smoothed popularity prior."""
    counts = torch.as_tensor(frequency, dtype=torch.float64)
    return torch.log((counts + 1) / (counts.sum() + counts.numel())).float()


class FrequencyAwareFusion(nn.Module):
    """Formula 17: per-item softmax weights over 1 + M heads, chosen by item popularity.

    The ID head is ⟨ĥ, E_out[j]⟩ + b_j; modality m's head is ⟨ĥ, A_m e_m(j)⟩ with a map
    A_m: H → d_m of its own (``calibrated``) or ⟨h, W_m e_m(j)⟩ with the input projection
    (``paper``, tied: :meth:`MMESID.scores` passes ⟨h, W_m e_m(j)⟩).
    """

    def __init__(
        self,
        n_items: int,
        hidden: int,
        modalities: Sequence[str],
        frequency: torch.Tensor,
        fusion: bool = True,
        temperature: float = 1.0,
        head: str = "calibrated",
        input_dims: dict[str, int] | None = None,
        log_prior: torch.Tensor | None = None,
        output: str = "id",
    ):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {head!r}")
        self.modalities = list(modalities)
        if not fusion and output != "id" and output not in self.modalities:
            raise ValueError(f"output head {output!r} is neither 'id' nor a modality")
        self.fusion = fusion
        self.temperature = temperature
        self.kind = head
        self.n_items = n_items
        # The heads that score: formula 17's 1 + M, or the one chosen without fusion.
        self.heads = ["id", *self.modalities] if fusion else [output]
        self.out = None
        if "id" in self.heads:
            self.out = nn.Linear(hidden, n_items, bias=False)  # E_out: a new item table (N, H)
        self.register_buffer("frequency", frequency.float().reshape(n_items, 1))  # f, (N, 1)
        calibrated = head == "calibrated"
        # ĥ = (h − μ) / σ; identity until calibrate_head() measures μ and σ.
        self.register_buffer("h_mean", torch.zeros(hidden))
        self.register_buffer("h_scale", torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(n_items)) if calibrated else None  # b, (N,)
        self.maps = nn.ModuleDict()  # A_m: H → d_m (calibrated heads; the paper's are tied)
        if calibrated:
            dims = input_dims or {}
            self.maps.update(
                {m: nn.Linear(hidden, dims[m], bias=False) for m in self.heads if m != "id"}
            )
        if fusion:
            # g, as in the reference code: 1 → 64 → 10, then 10 → 64 → heads, GELU after 64s.
            self.gate = nn.Sequential(
                nn.Linear(1, 64),
                nn.GELU(),
                nn.Linear(64, 10),
                nn.Linear(10, 64, bias=False),
                nn.GELU(),
                nn.Linear(64, 1 + len(self.modalities)),
            )
        if calibrated:
            with torch.no_grad():
                for layer in [self.out, *self.maps.values()]:
                    if layer is not None:
                        layer.weight.zero_()
                if fusion:  # w_j = 1 / (1 + M) for every item at step 0
                    self.gate[-1].weight.zero_()
                    self.gate[-1].bias.zero_()
                if log_prior is not None:  # s_j = w_j1 · b_j = log p_j at step 0
                    share = 1 + len(self.modalities) if fusion else 1
                    self.bias.copy_(share * log_prior.float())

    def weights(self) -> torch.Tensor:
        """w = softmax(g(f) / T) for every item at once: (N, 1 + M)."""
        return torch.softmax(self.gate(self.frequency) / self.temperature, dim=-1)

    def normalise(self, h: torch.Tensor) -> torch.Tensor:
        """ĥ = (h − μ) / σ (the identity for the paper's head)."""
        if self.kind == "paper":
            return h
        return (h - self.h_mean) / self.h_scale

    def content_scores(self, h: torch.Tensor, embeddings: dict[str, torch.Tensor]) -> dict:
        """⟨ĥ, A_m e_m(j)⟩ for every modality head: ĥ (T, H), e_m (N, d_m) → (T, N) each."""
        return {m: self.maps[m](h) @ embeddings[m].T for m in self.maps}

    def forward(self, h: torch.Tensor, content: dict[str, torch.Tensor] | None = None):
        """Scores of all items: ĥ (T, H) and the modality heads' (T, N) scores → s (T, N)."""
        content = content or {}
        first = self.heads[0]
        scores = self.out(h) if first == "id" else content[first]  # (T, N)
        if self.bias is not None:  # the bias belongs to the first head: gated with it
            scores = scores + self.bias
        if not self.fusion:
            return scores
        w = self.weights()  # computed once per forward for all items, not per user
        scores = w[:, 0] * scores
        for k, m in enumerate(self.modalities, start=1):
            scores = scores + w[:, k] * content[m]  # w_jk ⟨ĥ, A_m e_m(j)⟩
        return scores


def _cache_argument(decoder: nn.Module) -> str:
    """transformers ≥ 5.2x names the KV cache argument ``cache``; older ones ``past_key_values``."""
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class MMESID(nn.Module):
    """The whole model: backbone (with LoRA), item tokens, fusion head, prompt token ids.

    ``objective`` says where h is read: ``all-positions`` (instruction + history, h_t at every
    item position, the last one for scoring) or ``last`` (instruction + history + response,
    h at the last response token). ``compute_dtype`` bf16/fp16 runs the LLM under autocast
    (the heads and the loss stay in float32).
    """

    def __init__(
        self,
        backbone: nn.Module,
        item_tokens: ItemTokens,
        head: FrequencyAwareFusion,
        prefix_ids: Sequence[int],
        suffix_ids: Sequence[int],
        max_history: int = 50,
        prefix_cache: bool = True,
        objective: str = "all-positions",
        compute_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
        self.backbone = backbone
        self.item_tokens = item_tokens
        self.head = head
        self.objective = objective
        self.compute_dtype = compute_dtype
        suffix = list(suffix_ids) if objective == "last" else []
        self.register_buffer("prefix_ids", torch.tensor(list(prefix_ids), dtype=torch.long))
        self.register_buffer("suffix_ids", torch.tensor(suffix, dtype=torch.long))
        self.max_history = max_history
        self.prefix_cache = prefix_cache
        self.item_ids: list[str] = []  # filled by the builder: the item of each score column

    # -- the LLM as an encoder ----------------------------------------------------------
    def _decoder(self) -> nn.Module:
        """The LoRA-injected decoder stack (peft injects in place; no peft forward needed)."""
        get_base = getattr(self.backbone, "get_base_model", None)
        return get_base() if callable(get_base) else self.backbone

    def hidden_states(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states after the instruction: items, mask (B, n) → (B, n + S, H) float32.

        Columns 0…n−1 are the item positions, n… the response tokens (none for
        ``all-positions``). The instruction and response embeddings are looked up once per
        call, not per user. With ``prefix_cache`` the instruction is run through the LLM once
        (batch 1) and its keys/values are shared by all B users: it comes first and attention
        is causal, so its hidden states are the same for every user.
        """
        decoder = self._decoder()
        embed = decoder.get_input_embeddings()
        dtype = embed.weight.dtype if embed.weight.is_floating_point() else torch.float32
        batch, n = items.shape
        autocast = torch.autocast(
            items.device.type,
            dtype=self.compute_dtype,
            enabled=self.compute_dtype != torch.float32,
        )
        with autocast:
            prefix = embed(self.prefix_ids)[None]  # (1, P, H)
            suffix = embed(self.suffix_ids)[None].expand(batch, -1, -1)  # (B, S, H)
            tokens = self.item_tokens(items.clamp(min=0)).to(dtype)  # (B, n, H)
            tokens = tokens * mask[..., None].to(dtype)  # padded slots carry zeros (masked)
            ones = lambda length: mask.new_ones(batch, length)  # noqa: E731
            attention = torch.cat([ones(prefix.shape[1]), mask, ones(suffix.shape[1])], dim=1)
            attention = attention.long()
            positions = (attention.cumsum(dim=1) - 1).clamp(min=0)  # padding does not shift
            use_cache = self.prefix_cache and prefix.shape[1] > 0 and not _checkpointing(decoder)
            if use_cache:
                name = _cache_argument(decoder)
                first = decoder(inputs_embeds=prefix, use_cache=True)
                cache = getattr(first, "cache", None) or first.past_key_values
                cache.batch_repeat_interleave(batch)  # (1, …) keys/values → (B, …), differentiable
                rest = torch.cat([tokens, suffix], dim=1)  # (B, n + S, H)
                out = decoder(
                    inputs_embeds=rest,
                    attention_mask=attention,
                    position_ids=positions[:, prefix.shape[1] :],
                    use_cache=True,
                    **{name: cache},
                )
                states = out.last_hidden_state
            else:
                sequence = torch.cat([prefix.expand(batch, -1, -1), tokens, suffix], dim=1)
                out = decoder(
                    inputs_embeds=sequence, attention_mask=attention, position_ids=positions
                )
                states = out.last_hidden_state[:, prefix.shape[1] :]
        return states.float()

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h for scoring: the last position (last item, or last response token). → (B, H)."""
        return self.hidden_states(items, mask)[:, -1]

    # -- scoring --------------------------------------------------------------------------
    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """Scores of every item from hidden states h (T, H) → (T, N), in float32."""
        tokens = self.item_tokens
        h = self.head.normalise(h.float())
        wanted = [m for m in self.head.heads if m != "id"]
        if self.head.kind == "paper":  # the input projections double as heads (tied)
            heads = {m: tokens.inner_products(m, h) for m in wanted}
        else:
            embeddings = {m: tokens.embeddings[m] for m in wanted}
            heads = self.head.content_scores(h, embeddings)
            for m in heads:
                heads[m] = heads[m] * getattr(tokens, f"present_{m}")
        return self.head(h, heads)

    def forward(
        self, items: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores (B, N) of every item for each user; with ``labels``, the summed loss.

        ``labels`` (B,) are next-item rows read at the last position (``last``); (B, n) are
        the next item of every item position, −100 where there is none (``all-positions``).
        The sum (not the mean) lets the caller average over all labels of a step.
        """
        if labels is None:
            return self.scores(self.encode(items, mask))
        if labels.dim() == 1:
            return F.cross_entropy(self.scores(self.encode(items, mask)), labels, reduction="sum")
        states = self.hidden_states(items, mask)[:, : items.shape[1]]  # item positions
        keep = labels >= 0
        return F.cross_entropy(self.scores(states[keep]), labels[keep], reduction="sum")

    def loss(self, items: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the full softmax over all N items, averaged over the labels."""
        count = labels.numel() if labels.dim() == 1 else int((labels >= 0).sum())
        return self(items, mask, labels) / max(count, 1)

    @torch.no_grad()
    def score(self, histories: list[np.ndarray], chunk: int | None = None) -> torch.Tensor:
        """Scores (B, N) for a batch of histories (item rows), the last ``max_history`` each.

        Users are run through the LLM in chunks of ``chunk`` of similar history length (the
        rows come back in the order given), so short histories are not padded to the
        longest one of the whole batch. ``None``: 32 on a CPU, 256 on a GPU (where a small
        chunk leaves the device idle: 22k Beauty users took 114 s at 32 on an H200).
        """
        was_training = self.training
        self.eval()
        try:
            device = self.prefix_ids.device
            chunk = chunk or (256 if device.type == "cuda" else 32)
            lengths = np.array([min(len(h), self.max_history) for h in histories])
            order = np.argsort(lengths, kind="stable")
            out = torch.empty(len(histories), self.head.n_items, device=device)
            for start in range(0, len(order), chunk):
                rows = order[start : start + chunk]
                items, mask = left_pad([histories[i] for i in rows], self.max_history)
                out[torch.as_tensor(rows, device=device)] = self(items.to(device), mask.to(device))
            return out
        finally:
            self.train(was_training)


@torch.no_grad()
def calibrate_head(model: MMESID, items: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Set ĥ's μ and σ from one forward (eval mode) over a batch of training sequences.

    μ is the mean of h over the read positions (every item position for ``all-positions``,
    the last position for ``last``), σ the root mean square of h − μ over positions and
    dimensions, so ĥ has about unit variance per dimension. Returns what it measured (the
    norm of μ, σ, the mean pairwise cosine of the raw h: how alike users look at step 0).
    """
    was_training = model.training
    model.eval()
    try:
        if model.objective == "all-positions":
            h = model.hidden_states(items, mask)[:, : items.shape[1]][mask.bool()]
        else:
            h = model.encode(items, mask)
        h = h.double()
        mean = h.mean(dim=0)
        scale = (h - mean).pow(2).mean().sqrt().clamp(min=1e-6)
        unit = F.normalize(h, dim=-1)
        cosine = (unit @ unit.T).fill_diagonal_(0).sum() / max(len(h) * (len(h) - 1), 1)
        model.head.h_mean.copy_(mean.float())
        model.head.h_scale.copy_(scale.float())
        return {
            "positions": len(h),
            "h_norm": float(h.norm(dim=-1).mean()),
            "mean_norm": float(mean.norm()),
            "scale": float(scale),
            "mean_pairwise_cosine": float(cosine),
        }
    finally:
        model.train(was_training)


def _checkpointing(decoder: nn.Module) -> bool:
    """Gradient checkpointing drops the KV cache in training; the prefix cache needs it."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # new name first
        if hasattr(type(decoder), name):
            return bool(getattr(decoder, name)) and decoder.training
    return False


@torch.no_grad()
def item_tokens(model: MMESID, batch_size: int = 4096) -> np.ndarray:
    """x_i for all N items, the matrix the LLM is fed (for ``mmesid collapse``): (N, H)."""
    builder = model.item_tokens
    device = builder.projections[builder.modalities[0]].weight.device
    rows = []
    for start in range(0, builder.n_items, batch_size):
        idx = torch.arange(start, min(start + batch_size, builder.n_items), device=device)
        rows.append(builder(idx).float().cpu())
    return torch.cat(rows).numpy()


@torch.no_grad()
def item_token_inputs(model: MMESID) -> dict[str, np.ndarray]:
    """The MLP's inputs for all items: ``<m>.projection`` = W_m e_m and ``<m>.sid`` = S_m, (N, H)."""
    builder = model.item_tokens
    out = {}
    for m in builder.modalities:
        out[f"{m}.projection"] = builder.projected(m).float().cpu().numpy()
        if builder.sids:
            idx = torch.arange(builder.n_items, device=builder.sids[m].codes.device)
            out[f"{m}.sid"] = builder.sids[m](idx).float().cpu().numpy()
    return out


@torch.no_grad()
def sid_tables(model: MMESID) -> dict[str, list[torch.Tensor]]:
    """Fine-tuned SID tables per modality as used at the LLM input: L × (K, H)."""
    return {
        m: [t.detach().float().cpu() for t in sid.used_tables()]
        for m, sid in model.item_tokens.sids.items()
    }


def random_table_std(codebooks: Sequence[torch.Tensor] | None) -> float:
    """Std of random SID tables: that of the trained codebooks (a fair ablation), else 0.02."""
    if not codebooks:
        return 0.02
    values = torch.cat([c.reshape(-1).float() for c in codebooks])
    std = float(values.std())
    return std if math.isfinite(std) and std > 0 else 0.02
