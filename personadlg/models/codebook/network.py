"""The MORPHEUS network: persona encoder, codebook, code → prefix MLP, code predictor, decoder.

Shapes: B examples, M persona slots, N codes, D code dim (the persona encoder's hidden size),
H the decoder's hidden size, T tokens.

    z_e = pool(encoder(segments))                 (B, M, D)   persona segment encodings
    k   = argmin_k ||z_e - e_k||                  (B, M)      their nearest codes
    prefix = mlp(z_q) → keys, values              (B, layers, kv_heads, M, head_dim)
    s   = pool(decoder(history))                  (B, H)      mean (or last token), no prefix: as at inference
          or mean(history_encoder(history text))  (B, E)      a sentence embedding (`history_encoder`)
    logits = head_j(s) for each slot j            (B, M, N)   which code fills each slot

Stage `role` conditions the decoder on the continuous encodings z_e (no codebook yet); stages
`init` and `joint` on the codes, with L_G + L_V + L_D + L_C (`losses.py`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from personadlg.models.codebook.config import CodebookConfig
from personadlg.models.codebook.losses import (
    code_loss,
    info_nce,
    straight_through,
    token_nll,
    vq_loss,
)
from personadlg.models.prefix import (
    cache_geometry,
    cache_kwargs,
    prefix_cache,
    teacher_forced_inputs,
)

RECENT = 1024
"""Recent encodings kept for dead-code restarts."""


def _mlp(d_in: int, hidden: int, d_out: int, act: type[nn.Module]) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), act(), nn.Dropout(0.1), nn.Linear(hidden, d_out))


class SlotHeads(nn.Module):
    """One two-layer MLP head per slot, batched: state (B, H) → outputs (B, M, OUT)."""

    def __init__(self, slots: int, d_in: int, hidden: int, d_out: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(slots, d_in, hidden))
        self.b1 = nn.Parameter(torch.empty(slots, hidden))
        self.w2 = nn.Parameter(torch.empty(slots, hidden, d_out))
        self.b2 = nn.Parameter(torch.empty(slots, d_out))
        self.dropout = nn.Dropout(0.1)
        for w, b, fan_in in ((self.w1, self.b1, d_in), (self.w2, self.b2, hidden)):
            bound = fan_in**-0.5  # nn.Linear's default initialisation, per head
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        h = torch.relu(torch.einsum("bh,mhk->bmk", state, self.w1) + self.b1)
        return torch.einsum("bmk,mko->bmo", self.dropout(h), self.w2) + self.b2


def base_model(lm: nn.Module) -> nn.Module:
    """The transformer body of a causal LM (its hidden states without the LM head)."""
    body = getattr(lm, "base_model", lm)
    return body if isinstance(body, nn.Module) else lm


def hidden_states(body: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Final-layer states (B, T, H) of IDS / MASK (B, T), positions counted over real tokens (any
    padding side)."""
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    out = body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


class CodebookNetwork(nn.Module):
    """Every trainable part of the method (see the module docstring)."""

    last_used: torch.Tensor  # (N,) the last step each code was chosen (dead-code restarts)
    recent: torch.Tensor  # (RECENT, D) a ring of recent encodings
    recent_count: torch.Tensor  # () encodings pushed so far
    encoder: Any
    decoder: Any
    history_encoder: Any

    def __init__(
        self,
        *,
        decoder: nn.Module,
        encoder: nn.Module | None,
        cfg: CodebookConfig,
        history_encoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.decoder = decoder
        self.encoder = encoder  # None: the decoder's own body encodes persona segments
        self.history_encoder = history_encoder  # None: code prediction reads the decoder's states
        self.cfg = cfg
        dcfg: Any = decoder.config
        self.hidden = int(dcfg.hidden_size)
        hcfg: Any = history_encoder.config if history_encoder is not None else dcfg
        state_dim = int(hcfg.hidden_size)
        ecfg: Any = encoder.config if encoder is not None else dcfg
        self.code_dim = int(ecfg.hidden_size)
        self.layers, self.kv_heads, self.head_dim = cache_geometry(dcfg)
        m, n, d = cfg.slots, cfg.n_codes, self.code_dim
        self.codebook = nn.Parameter(torch.empty(n, d).uniform_(-1.0 / n, 1.0 / n))
        width = self.layers * self.kv_heads * self.head_dim
        self.prefix_mlp = _mlp(
            d, cfg.prefix_hidden or 2 * d, width * (1 if cfg.shared_kv else 2), nn.Tanh
        )
        std = float(getattr(dcfg, "initializer_range", 0.02) or 0.02)
        last = self.prefix_mlp[-1]
        assert isinstance(last, nn.Linear)
        nn.init.normal_(last.weight, std=std)
        nn.init.zeros_(last.bias)
        out = n if cfg.quantize else d
        self.predictor = SlotHeads(m, state_dim, cfg.predictor_hidden or state_dim, out)
        self.step = 0
        self.register_buffer("last_used", torch.zeros(n, dtype=torch.long), persistent=True)
        self.register_buffer("recent", torch.zeros(RECENT, d), persistent=True)
        self.register_buffer("recent_count", torch.zeros((), dtype=torch.long), persistent=True)

    def needs_encoder_copy(self) -> bool:
        """Stages init / joint with the decoder as persona encoder and `freeze_encoder`: segments
        are encoded by a frozen copy of the (role-aware) decoder's body."""
        c = self.cfg
        return (
            c.encoder == "decoder"
            and c.freeze_encoder
            and not c.freeze_decoder
            and c.stage in ("init", "joint")
        )

    def copy_encoder(self) -> None:
        """Make `encoder` a frozen copy of the decoder's body as it is now."""
        import copy

        body = copy.deepcopy(base_model(self.decoder))
        for p in body.parameters():
            p.requires_grad_(False)
        self.encoder = body

    # -- parts --------------------------------------------------------------------------------------

    def encode_segments(self, seg_ids: torch.Tensor, seg_len: torch.Tensor) -> torch.Tensor:
        """Encodings z_e (B, M, D) of persona segments SEG_IDS (B, M, T) of lengths SEG_LEN (B, M)."""
        b, m, t = seg_ids.shape
        ids = seg_ids.reshape(b * m, t)
        lengths = seg_len.reshape(b * m).clamp(min=1)
        mask = (torch.arange(t, device=ids.device)[None, :] < lengths[:, None]).long()
        decoder_like = self.cfg.encoder == "decoder"  # the decoder, or a frozen copy of its body
        if decoder_like:
            body = self.encoder if self.encoder is not None else base_model(self.decoder)
            states = hidden_states(body, ids, mask)
        else:
            out = self.encoder(input_ids=ids, attention_mask=mask)
            states = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        pool = self.cfg.encoder_pool
        if pool == "auto":
            pool = "last" if decoder_like else "mean"
        if pool == "last":
            pooled = states[torch.arange(b * m, device=ids.device), lengths - 1]
        elif pool == "cls":
            pooled = states[:, 0]
        else:
            w = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * w).sum(1) / w.sum(1).clamp(min=1)
        return pooled.float().reshape(b, m, -1)

    def history_state(
        self, ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor
    ) -> torch.Tensor:
        """The decoder's final-layer history state (B, H) of the prompt IDS / MASK (B, T) whose
        last token is at LAST (B,), without any prefix — what code prediction sees, in training
        and at inference: that token's state, or the mean over the prompt (`history_pool`)."""
        states = hidden_states(base_model(self.decoder), ids, mask).float()
        if self.cfg.history_pool == "mean":
            w = mask.unsqueeze(-1).to(states.dtype)
            return (states * w).sum(1) / w.sum(1).clamp(min=1)
        return states[torch.arange(ids.shape[0], device=ids.device), last]

    def history_embedding(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The history encoder's sentence embedding (B, E) of the history text IDS / MASK (B, T):
        its final states mean-pooled over the real tokens (sentence-transformers' pooling)."""
        assert self.history_encoder is not None
        out = self.history_encoder(input_ids=ids, attention_mask=mask)
        states = (out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]).float()
        w = mask.unsqueeze(-1).to(states.dtype)
        return (states * w).sum(1) / w.sum(1).clamp(min=1)

    def predict(self, state: torch.Tensor) -> torch.Tensor:
        """Per-slot outputs (B, M, N) (code logits; (B, M, D) vectors without a codebook)."""
        dtype = next(self.predictor.parameters()).dtype
        return self.predictor(state.to(dtype)).float()

    def prefix(self, vectors: torch.Tensor, *, repeat: int = 1, read_only: bool = False) -> Any:
        """A cache holding M prefix positions in every decoder layer from VECTORS (B, M, D)
        (each example's rows repeated REPEAT times, for beams; READ_ONLY for training)."""
        b, m, _ = vectors.shape
        dtype = next(self.prefix_mlp.parameters()).dtype
        out = self.prefix_mlp(vectors.to(dtype))  # (B, M, [2] × layers × kv × head_dim)
        parts = 1 if self.cfg.shared_kv else 2
        out = out.view(b, m, parts, self.layers, self.kv_heads, self.head_dim)
        out = out.permute(2, 0, 3, 4, 1, 5)  # (parts, B, layers, kv, M, head_dim)
        dec_dtype = next(self.decoder.parameters()).dtype
        keys = out[0].to(dec_dtype)
        values = out[-1].to(dec_dtype)
        if repeat > 1:
            keys = keys.repeat_interleave(repeat, 0)
            values = values.repeat_interleave(repeat, 0)
        return prefix_cache(keys, values, self.decoder.config, read_only=read_only)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest codes (B, M) of encodings Z (B, M, D) (sorted per example if configured)."""
        b, m, d = z.shape
        codes = torch.cdist(z.reshape(b * m, d).float(), self.codebook.float()).argmin(-1)
        codes = codes.view(b, m)
        if self.cfg.sort_slots:
            codes = codes.sort(-1).values
        return codes

    # -- training -----------------------------------------------------------------------------------

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.cfg
        z = self.encode_segments(batch["seg_ids"], batch["seg_len"])  # (B, M, D)
        b, m, d = z.shape
        terms: dict[str, torch.Tensor] = {}
        if c.stage == "role":
            cond = z
        elif not c.quantize:
            cond = z
            state = self._state(batch)
            terms["code"] = torch.nn.functional.mse_loss(self.predict(state), z.detach())
            terms["_state"] = state
        else:
            flat = z.reshape(b * m, d)
            dist = torch.cdist(flat, self.codebook.float())  # (B·M, N)
            k = dist.argmin(-1).view(b, m)
            if c.sort_slots:  # slot j holds the j-th smallest code: a function of the persona set
                k, order = k.sort(-1)
                z = z.gather(1, order[..., None].expand(b, m, d))
                flat = z.reshape(b * m, d)
            kf = k.reshape(-1)
            e = self.codebook[kf].float()  # (B·M, D)
            terms["vq"] = vq_loss(flat, e, beta=c.beta)
            if c.contrastive_weight > 0:
                terms["contrastive"] = info_nce(flat, self.codebook, kf, temperature=c.temperature)
            cond = straight_through(flat, e, c.straight_through).view(b, m, d)
            state = self._state(batch)
            logits = self.predict(state)  # (B, M, N)
            terms["code"] = code_loss(
                logits.reshape(b * m, -1), kf, kind=c.code_loss, gamma=c.focal_gamma
            )
            terms["_codes"], terms["_logits"] = k, logits
            terms["_vq_dist"] = (flat - e).detach().norm(dim=-1).view(b, m)
            if self.training and c.dead_code_steps:
                self._track(kf, flat)
        terms["lm"] = self.lm_loss(batch, cond)
        weights = {
            "lm": c.lm_weight,
            "vq": c.vq_weight,
            "code": c.code_weight,
            "contrastive": c.contrastive_weight,
        }
        terms["loss"] = sum(weights[k] * v for k, v in terms.items() if k in weights)  # type: ignore[assignment]
        return terms

    def _state(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.history_encoder is not None:
            if self.cfg.tune_history_encoder:
                return self.history_embedding(batch["hist_ids"], batch["hist_mask"])
            with torch.no_grad():
                return self.history_embedding(batch["hist_ids"], batch["hist_mask"])
        ids, plen = batch["input_ids"], batch["prompt_len"]
        width = int(plen.max())
        mask = (torch.arange(width, device=ids.device)[None, :] < plen[:, None]).long()
        if self.cfg.predictor_grad and not self.cfg.freeze_decoder:
            return self.history_state(ids[:, :width], mask, plen - 1)
        with torch.no_grad():
            return self.history_state(ids[:, :width], mask, plen - 1)

    def lm_loss(self, batch: dict[str, torch.Tensor], cond: torch.Tensor) -> torch.Tensor:
        """L_G: the response NLL (mean over target tokens) with COND (B, M, D) as the prefix."""
        cache = self.prefix(cond, read_only=True)
        inputs = teacher_forced_inputs(batch["input_ids"], batch["attention_mask"], cond.shape[1])
        out = self.decoder(**inputs, **cache_kwargs(self.decoder, cache), use_cache=True)
        return token_nll(out.logits, batch["labels"])

    # -- dead codes ---------------------------------------------------------------------------------

    @torch.no_grad()
    def _track(self, codes: torch.Tensor, z: torch.Tensor) -> None:
        self.last_used[codes] = self.step
        n = z.shape[0]
        start = int(self.recent_count) % RECENT
        idx = (torch.arange(n, device=z.device) + start) % RECENT
        self.recent[idx[-RECENT:]] = z.detach()[-RECENT:].to(self.recent.dtype)
        self.recent_count += n

    @torch.no_grad()
    def restart_dead_codes(self, step: int) -> int:
        """Re-seed the codes unused for `dead_code_steps` steps from recent encodings (plus a
        little seeded noise); returns how many. The same on every process (rank 0's buffers)."""
        self.step = step
        k = self.cfg.dead_code_steps
        if not k or step < k or int(self.recent_count) == 0:
            return 0
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            for buf in (self.last_used, self.recent, self.recent_count):
                dist.broadcast(buf, 0)
        dead = (step - self.last_used >= k).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        g = torch.Generator().manual_seed(step)
        have = min(int(self.recent_count), RECENT)
        pick = torch.randint(0, have, (dead.numel(),), generator=g)
        fresh = self.recent[pick.to(self.recent.device)].float()
        noise = torch.randn(fresh.shape, generator=g).to(fresh.device) * 1e-3 * (fresh.std() + 1e-6)
        self.codebook.data[dead] = (fresh + noise).to(self.codebook.dtype)
        self.last_used[dead] = step
        return int(dead.numel())
