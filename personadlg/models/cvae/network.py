"""The CVAE network: prior and posterior encoders, the latent-injected decoder, the latent
attribute heads, and the training objective (MIRACLE):

    L = L_rec + kl_weight * beta * KL_free_bits(q(z|c,r) || p(z|c)) + cls_weight * L_cls + gap_weight * L_gap

`forward(**batch)` returns every term (the trainer logs them) and, under "_" keys, the latent
statistics that validation turns into diagnostics (active units, head accuracy, mutual information).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from personadlg.models.cvae.config import CVAEConfig
from personadlg.models.cvae.encoder import GaussianHead, encode_states, encoder_hidden_size
from personadlg.models.cvae.inject import LatentInjection
from personadlg.models.cvae.losses import free_bits_kl, gap_loss, gaussian_kl
from personadlg.models.prefix import cache_kwargs, teacher_forced_inputs

IGNORE = -100


def attribute_head(latent_dim: int, hidden: int, n_aspects: int) -> nn.Module:
    """d_z → hidden → ReLU → n_aspects logits (MIRACLE: 768 → 128 → 2)."""
    return nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_aspects))


class CVAENetwork(nn.Module):
    """Every trainable part of the model; `forward(**batch)` computes the loss terms.

    Batch (B examples): prior_ids / prior_mask (B, Tc) context; post_ids / post_mask (B, Tp)
    context + response; dec_ids / dec_mask / labels (B, Td) decoder sequence with -100 on
    untrained positions; attr (B, A) aspect index per attribute, -1 when unlabelled.
    """

    def __init__(
        self,
        *,
        prior_encoder: nn.Module,
        posterior_encoder: nn.Module | None,
        decoder: nn.Module,
        attributes: dict[str, list[str]],
        cfg: CVAEConfig,
    ) -> None:
        super().__init__()
        d = cfg.latent_dim
        self.cfg = cfg
        self.attribute_names = list(attributes)
        self.prior_encoder: Any = prior_encoder
        self.posterior_encoder: Any = posterior_encoder  # None: share the prior's network
        hidden = encoder_hidden_size(prior_encoder)
        norm = cfg.freeze_encoders  # frozen sentence embeddings are standardised first
        self.prior_head = GaussianHead(hidden, d, normalize=norm)
        self.posterior_head = GaussianHead(hidden, d, normalize=norm)
        self.decoder: Any = decoder
        self.inject = LatentInjection(decoder, d)
        self.heads = nn.ModuleList(
            attribute_head(d, cfg.head_hidden, len(aspects)) for aspects in attributes.values()
        )
        n = len(attributes)
        self.gap_centres: torch.Tensor
        self.gap_seen: torch.Tensor
        self.register_buffer("gap_centres", torch.zeros(n, d))
        self.register_buffer("gap_seen", torch.zeros(n, dtype=torch.bool))
        self.beta = 1.0
        """KL multiplier of the current step (the model sets it from the schedule)."""
        self.word_dropout_id = 0
        """The token that replaces dropped decoder inputs (the model sets the tokenizer's unknown token)."""

    # -- the parts ----------------------------------------------------------------------------------

    def prior(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context tokens (B, T) → prior mu, logvar (B, d_z)."""
        return self.prior_head(encode_states(self.prior_encoder, ids, mask))

    def posterior(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context + response tokens (B, T) → posterior mu, logvar (B, d_z)."""
        enc = self.posterior_encoder if self.posterior_encoder is not None else self.prior_encoder
        return self.posterior_head(encode_states(enc, ids, mask))

    def decoder_logits(
        self, z: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Teacher-forced decoder logits given z: z (B, d_z), ids / mask (B, T) → (B, T, V)."""
        dtype = next(self.decoder.parameters()).dtype
        cache = self.inject.prefix(z, dtype=dtype, read_only=True)
        with self.inject.offset(z):
            out = self.decoder(
                **teacher_forced_inputs(ids, mask, 1), **cache_kwargs(self.decoder, cache)
            )
        return out.logits

    def head_logits(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Each attribute head's logits: z (B, d_z) → [(B, n_aspects_a)]."""
        return [head(z) for head in self.heads]

    # -- the objective ------------------------------------------------------------------------------

    def forward(
        self,
        *,
        prior_ids: torch.Tensor,
        prior_mask: torch.Tensor,
        post_ids: torch.Tensor,
        post_mask: torch.Tensor,
        dec_ids: torch.Tensor,
        dec_mask: torch.Tensor,
        labels: torch.Tensor,
        attr: torch.Tensor,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        c = self.cfg
        mu_p, logvar_p = self.prior(prior_ids, prior_mask)
        mu_q, logvar_q = self.posterior(post_ids, post_mask)
        beta = self.beta if self.training else 1.0
        if self.training and beta > 0:
            z = mu_q + torch.randn_like(mu_q) * torch.exp(0.5 * logvar_q)
        else:
            z = mu_q  # autoencoder phase of the cyclic schedule, and validation

        dec_in = dec_ids
        if self.training and c.word_dropout > 0:  # the decoder must lean on z (Bowman et al. 2016)
            drop = (torch.rand(dec_ids.shape, device=dec_ids.device) < c.word_dropout) & (
                dec_mask > 0
            )
            drop[:, 0] = False  # BOS
            dec_in = dec_ids.masked_fill(drop, self.word_dropout_id)
        rec = lm_loss(self.decoder_logits(z, dec_in, dec_mask), labels)
        kl_dims = gaussian_kl(mu_q.float(), logvar_q.float(), mu_p.float(), logvar_p.float())
        kl = free_bits_kl(kl_dims, c.free_bits)
        kl_raw = kl_dims.sum(-1).mean()

        logits = self.head_logits(z)
        cls = head_loss(logits, attr)
        labelled = attr >= 0  # (B, A)
        gap, centres = gap_loss(
            z.float(),
            labelled,
            self.gap_centres.float(),
            self.gap_seen,
            sign=c.gap_sign,
            margin=c.gap_margin,
        )
        if self.training:
            with torch.no_grad():
                for a, centre in centres.items():
                    self.gap_centres[a] = centre.to(self.gap_centres.dtype)
                    self.gap_seen[a] = True
        loss = rec + c.kl_weight * beta * kl + c.cls_weight * cls + c.gap_weight * gap
        out = {
            "loss": loss,
            "rec": rec.detach(),
            "kl": kl.detach(),
            "kl_raw": kl_raw.detach(),
            "cls": cls.detach(),
            "gap": gap.detach(),
            "beta": torch.tensor(float(beta)),
            "_mu_post": mu_q.detach(),
            "_logvar_post": logvar_q.detach(),
            "_mu_prior": mu_p.detach(),
        }
        if not self.training:
            out["rec_prior"] = lm_loss(self.decoder_logits(mu_p, dec_ids, dec_mask), labels)
        return out


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the trained positions: logits (B, T, V), labels (B, T) → ()."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE,
    )


def head_loss(logits: Sequence[torch.Tensor], attr: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled (example, attribute) pairs; 0 (still in the graph) when none.

    logits: per attribute (B, n_aspects_a); attr (B, A) aspect index or -1.
    """
    total = logits[0].new_zeros((), dtype=torch.float32)
    for a, lg in enumerate(logits):
        total = total + F.cross_entropy(lg.float(), attr[:, a], ignore_index=-1, reduction="sum")
    return total / (attr >= 0).sum().clamp(min=1)
