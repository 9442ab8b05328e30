"""The `cvae` model (MIRACLE): examples → features, batches → losses, targets → responses.

Generation for a batch of (example, target) pairs:
  1. the prior encoder maps each context to mu, logvar; the start latent is mu (`prior_mean`,
     MIRACLE) or a sample seeded per example (`prior_sample`);
  2. the ODE (`ode.py`) moves every latent towards its own targets, all pairs in one batch;
  3. the decoder, given z (embedding offset + key/value prefix), decodes with any of `generate`'s
     strategies (greedy, sampling with per-example seeds, beams).
`generate` returns Generations whose shared `latent` entry goes into every record's `decoding`
(start, scale, solver, NFE).

Checkpoint layout (inside step-*/ or final/): `decoder/`, `prior_encoder/`, `posterior_encoder/`
(absent when shared) as standard Hugging Face model dirs; `latent.safetensors` (Gaussian heads,
injection maps, attribute heads, gap cache); `cvae.json` (attribute space); the decoder tokenizer;
`encoder_tokenizer/` when the encoders use another one.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from personadlg.config import GenerateConfig, RunConfig, to_dict
from personadlg.data.schema import Example
from personadlg.errors import DataError, UsageError
from personadlg.models.backbone import (
    build_from_config,
    dialogue_tokenizer,
    encoder_from_config,
    knobs,
    load_encoder,
    load_pretrained,
    load_tokenizer,
    position_limit,
)
from personadlg.models.base import GROUP, BuildContext, Generations, PromptReading, TokenView
from personadlg.models.collate import pad_sequences
from personadlg.models.cvae.config import FIXED_GRID, CVAEConfig, ODEConfig
from personadlg.models.cvae.losses import beta_at, mutual_information
from personadlg.models.cvae.network import IGNORE, CVAENetwork
from personadlg.models.cvae.ode import ODEResult, guide
from personadlg.models.decoding import generate_ids
from personadlg.models.detokenize import decode
from personadlg.models.loading import from_pretrained
from personadlg.models.prefix import cache_kwargs, generation_inputs
from personadlg.models.render import RenderOptions, render
from personadlg.registry import did_you_mean

logger = logging.getLogger(__name__)

META_FILE = "cvae.json"
LATENT_FILE = "latent.safetensors"
_SUBMODELS = ("decoder", "prior_encoder", "posterior_encoder")


def _pad(seqs: Sequence[Sequence[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists: → ids (B, T), mask (B, T)."""
    return pad_sequences(seqs, value)


KL_COLLAPSE_NATS = 0.01
"""Validation KL(q || p) per latent dimension below which the KL has collapsed."""
MI_COLLAPSE_NATS = 0.05
"""With no active unit, a mutual information I(x; z) below this is a collapse too."""


class CVAEModel:
    """A trained or fresh MIRACLE model (see the module docstring)."""

    name = "cvae"
    tokenizer: Any
    perplexity = False  # exp(total loss) mixes terms; validation reports ppl of the decoder itself

    def __init__(
        self,
        net: CVAENetwork,
        tokenizer: Any,
        encoder_tokenizer: Any,
        attributes: dict[str, list[str]],
        cfg: CVAEConfig,
    ) -> None:
        self.net, self.tokenizer, self.encoder_tokenizer = net, tokenizer, encoder_tokenizer
        self.attributes = {k: list(v) for k, v in attributes.items()}
        self.cfg = cfg
        self.timings: dict[str, float] = defaultdict(float)
        """Seconds spent in generation so far: encode, ode, decode (for benchmarks)."""
        self._enc_opts = RenderOptions(persona=cfg.persona_in_prompt, chat_template="plain")
        self._dec_opts = RenderOptions(persona=cfg.persona_in_prompt, chat_template="auto")
        tok = tokenizer
        bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if bos is None:
            raise UsageError("the decoder tokenizer has neither a BOS nor an EOS token")
        self.bos_id: int = int(bos)
        self._collapse_warned = False
        unk = tok.unk_token_id if tok.unk_token_id is not None else tok.pad_token_id
        net.word_dropout_id = int(unk if unk is not None else self.bos_id)
        if cfg.freeze_encoders:
            for enc in (net.prior_encoder, net.posterior_encoder):
                if enc is not None:
                    enc.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self.net

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    # -- training features ------------------------------------------------------------------------

    def _encoder_budget(self) -> int:
        limit = position_limit(self.net.prior_encoder.config) or 10**9
        return max(4, min(self.cfg.max_context_tokens, limit - self.cfg.max_response_tokens - 2))

    def context_ids(self, example: Example) -> list[int]:
        """Encoder tokens of the context (oldest turns dropped to fit `max_context_tokens`)."""
        return render(
            example,
            self.encoder_tokenizer,
            self._enc_opts,
            max_prompt_tokens=self._encoder_budget(),
            with_target=False,
        ).prompt_ids

    def posterior_ids(self, context_ids: list[int], response: str) -> list[int]:
        """Encoder tokens of context + response (the response inside the context's end marker)."""
        tok = self.encoder_tokenizer
        resp = tok(" " + response, add_special_tokens=False)["input_ids"][
            : self.cfg.max_response_tokens
        ]
        sep = tok.sep_token_id
        if sep is not None and context_ids and context_ids[-1] == sep:
            return [*context_ids[:-1], *resp, sep]
        return [*context_ids, *resp]

    def _decoder_prompt(self, example: Example, budget: int) -> list[int]:
        return render(
            example,
            self.tokenizer,
            self._dec_opts,
            max_prompt_tokens=max(budget, 1),
            with_target=False,
            add_special_tokens=False,
        ).prompt_ids

    def decoder_sequence(self, example: Example) -> tuple[list[int], list[int]]:
        """(decoder ids, labels): `BOS [context] response EOS`, trained on the response and EOS."""
        tok, c = self.tokenizer, self.cfg
        target = tok(" " + (example.reference or ""), add_special_tokens=False)["input_ids"][
            : c.max_response_tokens
        ]
        if tok.eos_token_id is not None:
            target = [*target, tok.eos_token_id]
        prompt: list[int] = []
        if c.decoder_sees_context:
            limit = position_limit(self.net.decoder.config) or 10**9
            prompt = self._decoder_prompt(
                example, min(c.max_context_tokens, limit - len(target) - 2)
            )
        return [self.bos_id, *prompt, *target], [IGNORE] * (1 + len(prompt)) + target

    def attribute_labels(self, example: Example) -> list[int]:
        """Aspect index per declared attribute (-1 when the example is not labelled for it)."""
        out = []
        for name, aspects in self.attributes.items():
            aspect = example.attributes.get(name)
            if aspect is None:
                out.append(-1)
            elif aspect in aspects:
                out.append(aspects.index(aspect))
            else:
                raise DataError(
                    field=f"attributes.{name}",
                    expected=f"one of {', '.join(aspects)} (data.attributes)",
                    got=aspect,
                    path=f"example {example.id}",
                )
        return out

    def encode(self, example: Example) -> dict[str, Any] | None:
        if not example.reference:
            return None
        ctx = self.context_ids(example)
        dec, labels = self.decoder_sequence(example)
        attr = self.attribute_labels(example)
        return {
            "prior_ids": ctx,
            "post_ids": self.posterior_ids(ctx, example.reference),
            "dec_ids": dec,
            "labels": labels,
            "attr": attr,
            # attribute-homogeneous batches: the trainer batches examples of one group together
            **(
                {GROUP: [sum(1 << i for i, a in enumerate(attr) if a >= 0)]}
                if self.cfg.attribute_batches
                else {}
            ),
        }

    def collate(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        enc_pad = self.encoder_tokenizer.pad_token_id or 0
        dec_pad = self.tokenizer.pad_token_id or 0
        prior_ids, prior_mask = _pad([f["prior_ids"] for f in features], enc_pad)
        post_ids, post_mask = _pad([f["post_ids"] for f in features], enc_pad)
        dec_ids, dec_mask = _pad([f["dec_ids"] for f in features], dec_pad)
        labels, _ = _pad([f["labels"] for f in features], IGNORE)
        attr = torch.as_tensor(
            np.stack([np.asarray(f["attr"]) for f in features]), dtype=torch.long
        )
        return {
            "prior_ids": prior_ids,
            "prior_mask": prior_mask,
            "post_ids": post_ids,
            "post_mask": post_mask,
            "dec_ids": dec_ids,
            "dec_mask": dec_mask,
            "labels": labels,
            "attr": attr.reshape(len(features), len(self.attributes)),
        }

    def count_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        seen = int(batch["prior_mask"].sum() + batch["post_mask"].sum() + batch["dec_mask"].sum())
        return seen, int((batch["labels"] != IGNORE).sum())

    def explain(self, example: Example) -> list[TokenView]:
        feats = self.encode(example)
        if feats is None:
            return []
        enc, dec = self.encoder_tokenizer, self.tokenizer
        views = [
            TokenView(enc.convert_ids_to_tokens(t), t, False, "prior") for t in feats["prior_ids"]
        ]
        views += [
            TokenView(enc.convert_ids_to_tokens(t), t, False, "posterior")
            for t in feats["post_ids"]
        ]
        views += [
            TokenView(dec.convert_ids_to_tokens(t), t, lab != IGNORE, "decoder")
            for t, lab in zip(feats["dec_ids"], feats["labels"])
        ]
        return views

    # -- training hooks -----------------------------------------------------------------------------

    def on_step(self, step: int) -> None:
        """Called by the trainer before optimizer step STEP (0-based): sets the KL beta."""
        c = self.cfg
        self.net.beta = beta_at(
            step,
            schedule=c.beta_schedule,
            period=c.beta_period,
            zero_steps=c.beta_zero_steps,
            ramp_steps=c.beta_ramp_steps,
        )

    def eval_stats(
        self, batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Sums over a validation batch: posterior-mean moments (active units), head accuracy on
        posterior and prior means, mutual information, decoder NLL for perplexity."""
        mu = outputs["_mu_post"].float()
        logvar = outputs["_logvar_post"].float()
        mu_prior = outputs["_mu_prior"].float()
        attr = batch["attr"]
        b = mu.shape[0]
        f64 = torch.float64
        labelled = (attr >= 0).sum(0).to(f64).cpu()
        with torch.no_grad():
            post = [lg.argmax(-1) for lg in self.net.head_logits(outputs["_mu_post"])]
            prior = [lg.argmax(-1) for lg in self.net.head_logits(outputs["_mu_prior"])]
        correct_post = torch.stack(
            [((p == attr[:, a]) & (attr[:, a] >= 0)).sum() for a, p in enumerate(post)]
        )
        correct_prior = torch.stack(
            [((p == attr[:, a]) & (attr[:, a] >= 0)).sum() for a, p in enumerate(prior)]
        )
        g = torch.Generator(device=mu.device).manual_seed(0)
        mi = mutual_information(mu, logvar, g) if b > 1 else mu.new_zeros(())
        tokens = float((batch["labels"][:, 1:] != IGNORE).sum())
        return {
            "n": torch.tensor([float(b)], dtype=f64),
            "mu_sum": mu.sum(0).to(f64).cpu(),
            "mu_sq_sum": mu.pow(2).sum(0).to(f64).cpu(),
            "prior_mu_sq_sum": mu_prior.pow(2).sum(0).to(f64).cpu(),
            "mi": torch.tensor(
                [float(mi) * b if b > 1 else 0.0, float(b) if b > 1 else 0.0], dtype=f64
            ),
            "kl": torch.tensor([float(outputs["kl_raw"]) * b], dtype=f64),
            "labelled": labelled,
            "correct_post": correct_post.to(f64).cpu(),
            "correct_prior": correct_prior.to(f64).cpu(),
            "nll": torch.tensor(
                [float(outputs["rec"]) * tokens, float(outputs["rec_prior"]) * tokens, tokens],
                dtype=f64,
            ),
        }

    def eval_metrics(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        n = float(stats["n"][0])
        mean = stats["mu_sum"] / n
        var = stats["mu_sq_sum"] / n - mean.pow(2)
        active = int((var > 0.01).sum())
        nll_post, nll_prior, tokens = stats["nll"].tolist()
        mi_sum, mi_n = stats["mi"].tolist()
        kl_per_dim = float(stats["kl"][0]) / n / self.cfg.latent_dim
        mi = mi_sum / mi_n if mi_n else float("nan")
        out: dict[str, float] = {
            "active_units": float(active),
            "mi": mi,
            "ppl": float(np.exp(min(nll_post / max(tokens, 1), 50.0))),
            "ppl_prior": float(np.exp(min(nll_prior / max(tokens, 1), 50.0))),
        }
        for a, name in enumerate(self.attributes):
            count = float(stats["labelled"][a])
            if count:
                out[f"acc_{name}"] = 100.0 * float(stats["correct_post"][a]) / count
                out[f"prior_acc_{name}"] = 100.0 * float(stats["correct_prior"][a]) / count
        # Collapse: q(z|x) = p(z|c) everywhere (KL ~ 0), or no unit varies with x and z carries no
        # information. (Early in training units are often inactive while I(x; z) is already > 0.)
        collapsed = kl_per_dim < KL_COLLAPSE_NATS or (active == 0 and not mi >= MI_COLLAPSE_NATS)
        if collapsed and not self._collapse_warned:
            self._collapse_warned = True
            logger.warning(
                "posterior collapse: KL %.4f nats per latent dimension, %d active units, mutual "
                "information %.3f nats: z carries (almost) no information about the response; raise "
                "model.free_bits, lower model.kl_weight or use beta_schedule cyclic_linear",
                kl_per_dim,
                active,
                mi,
            )
        return out

    def after_training(self, run_dir: Path, features: Sequence[dict[str, Any]]) -> Path | None:
        """Draw RUN_DIR/latent_space.png from validation features (main process, end of training)."""
        from personadlg.models.cvae.latent_plot import plot_latent_space

        if not features:
            return None
        return plot_latent_space(self, features, run_dir / "latent_space.png")

    # -- latent utilities (library API) -----------------------------------------------------------

    @torch.no_grad()
    def latents(
        self,
        features: Sequence[dict[str, Any]],
        *,
        which: str = "prior",
        batch_size: int = 64,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """mu, logvar (N, d_z) of encoded FEATURES (from `encode`), from the prior or posterior encoder."""
        self.net.eval()
        mus, logvars = [], []
        for i in range(0, len(features), batch_size):
            chunk = features[i : i + batch_size]
            key = "prior_ids" if which == "prior" else "post_ids"
            ids, mask = _pad([f[key] for f in chunk], self.encoder_tokenizer.pad_token_id or 0)
            fn = self.net.prior if which == "prior" else self.net.posterior
            mu, logvar = fn(ids.to(self.device), mask.to(self.device))
            mus.append(mu.float().cpu())
            logvars.append(logvar.float().cpu())
        return torch.cat(mus), torch.cat(logvars)

    @torch.no_grad()
    def prior(
        self, examples: Sequence[Example], *, batch_size: int = 64
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior mu, logvar (N, d_z) of the examples' contexts (each distinct example encoded once)."""
        self.net.eval()
        index: dict[int, int] = {}
        unique: list[Example] = []
        rows = []
        for ex in examples:
            key = id(ex)
            if key not in index:
                index[key] = len(unique)
                unique.append(ex)
            rows.append(index[key])
        mus, logvars = [], []
        for i in range(0, len(unique), batch_size):
            ids, mask = _pad(
                [self.context_ids(ex) for ex in unique[i : i + batch_size]],
                self.encoder_tokenizer.pad_token_id or 0,
            )
            mu, logvar = self.net.prior(ids.to(self.device), mask.to(self.device))
            mus.append(mu.float())
            logvars.append(logvar.float())
        take = torch.tensor(rows, device=self.device)
        return torch.cat(mus)[take], torch.cat(logvars)[take]

    @torch.no_grad()
    def posterior(self, examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mu, logvar (N, d_z) of the examples' contexts with their references."""
        self.net.eval()
        seqs = []
        for ex in examples:
            if not ex.reference:
                raise UsageError(f"example {ex.id}: the posterior needs a reference response")
            seqs.append(self.posterior_ids(self.context_ids(ex), ex.reference))
        ids, mask = _pad(seqs, self.encoder_tokenizer.pad_token_id or 0)
        mu, logvar = self.net.posterior(ids.to(self.device), mask.to(self.device))
        return mu.float(), logvar.float()

    def target_matrix(self, targets: Sequence[dict[str, str] | None]) -> torch.Tensor:
        """Targets → (N, A) aspect indices, -1 where an attribute is not targeted."""
        rows = []
        for t in targets:
            row = [-1] * len(self.attributes)
            for attr, aspect in (t or {}).items():
                if attr not in self.attributes:
                    raise UsageError(
                        f"unknown attribute {attr!r}; this checkpoint knows {', '.join(self.attributes)}"
                    )
                aspects = self.attributes[attr]
                if aspect not in aspects:
                    raise UsageError(
                        f"unknown aspect {aspect!r} of {attr}; declared: {', '.join(aspects)}"
                    )
                row[list(self.attributes).index(attr)] = aspects.index(aspect)
            rows.append(row)
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), len(self.attributes))

    def guide(
        self,
        z: torch.Tensor,
        targets: Sequence[dict[str, str] | None],
        ode: ODEConfig | None = None,
    ) -> ODEResult:
        """Move latents z (N, d_z) towards per-row TARGETS with the energy ODE."""
        c = ode or self.cfg.ode
        weights = torch.tensor([c.weights.get(a, 1.0) for a in self.attributes])
        self.net.eval()
        return guide(
            z.float(),
            list(self.net.heads),
            self.target_matrix(targets).to(z.device),
            c,
            weights=weights,
        )

    @torch.no_grad()
    def decode(
        self,
        z: torch.Tensor,
        examples: Sequence[Example] | None = None,
        *,
        decoding: GenerateConfig,
        seeds: Sequence[int] | None = None,
    ) -> list[str]:
        """Responses decoded from latents z (N, d_z); EXAMPLES give the context prompt when the
        decoder sees it (`decoder_sees_context`)."""
        tok, net = self.tokenizer, self.net
        n = z.shape[0]
        seeds = list(seeds) if seeds is not None else [decoding.seed] * n
        prompts: list[list[int]] = [[] for _ in range(n)]
        if self.cfg.decoder_sees_context:
            if examples is None:
                raise UsageError("this model's decoder sees the context: pass the examples")
            limit = position_limit(net.decoder.config) or 10**9
            budget = min(self.cfg.max_context_tokens, limit - decoding.max_new_tokens - 2)
            prompts = [self._decoder_prompt(ex, budget) for ex in examples]
        width = max(len(p) for p in prompts) + 1
        pad = tok.pad_token_id if tok.pad_token_id is not None else self.bos_id
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding between the prefix and BOS
            row = [self.bos_id, *p]
            ids[i, width - len(row) :] = torch.tensor(row)
            mask[i, width - len(row) :] = 1
        inputs = generation_inputs(ids, mask, 1, pad)  # the latent prefix's cached position
        beams = 1 if decoding.do_sample else max(decoding.num_beams, 1)
        device = self.device
        net.eval()
        z = z.to(device)
        dtype = next(net.decoder.parameters()).dtype
        cache = net.inject.prefix(z.to(dtype), dtype=dtype, repeat=beams)
        with net.inject.offset(z.to(dtype)):
            new = generate_ids(
                net.decoder,
                inputs["input_ids"].to(device),
                inputs["attention_mask"].to(device),
                cfg=decoding,
                seeds=seeds,
                pad_token_id=pad,
                eos_token_id=tok.eos_token_id,
                **cache_kwargs(net.decoder, cache),
            )
        return [decode(tok, row, truecase_text=self.cfg.tokenizer.truecase) for row in new.tolist()]

    # -- generation -------------------------------------------------------------------------------

    def prompt_reading(self, supports: tuple[str, ...]) -> PromptReading:
        """The context's plain text (with the persona when `model.persona_in_prompt`); the
        decoder's positions hold it only when `model.decoder_sees_context`."""
        c = self.cfg
        if c.persona_in_prompt and "persona" not in supports:
            supports = ("persona", *supports)
        return PromptReading(
            supports=supports,
            render=RenderOptions(persona=c.persona_in_prompt, chat_template="plain"),
            context_budget=c.max_context_tokens,
            decoder_reads_prompt=c.decoder_sees_context,
        )

    def max_new_tokens_limit(self) -> int | None:
        """New tokens the decoder's positions leave room for after the latent prefix and BOS."""
        limit = position_limit(self.net.decoder.config)
        return None if limit is None else limit - 2

    def chunk_size(self, decoding: GenerateConfig) -> int:
        """(example, target) pairs `generate` should receive at once: one ODE solve's worth."""
        return max(decoding.batch_size, self.cfg.ode.batch_size)

    def start_latents(
        self, examples: Sequence[Example], seeds: Sequence[int], *, batch_size: int = 64
    ) -> torch.Tensor:
        """The ODE's start: prior means, or prior samples with one seeded generator per example."""
        mu, logvar = self.prior(examples, batch_size=batch_size)
        if self.cfg.ode.start == "prior_mean":
            return mu
        eps = torch.stack(
            [
                torch.randn(mu.shape[1], generator=torch.Generator().manual_seed(int(s)))
                for s in seeds
            ]
        ).to(mu.device)
        return mu + eps * torch.exp(0.5 * logvar)

    def generate(
        self,
        examples: Sequence[Example],
        *,
        decoding: GenerateConfig,
        seeds: Sequence[int],
        targets: Sequence[dict[str, str] | None],
    ) -> Generations:
        bs = decoding.batch_size
        t0 = time.perf_counter()
        z0 = self.start_latents(examples, seeds, batch_size=bs)
        t1 = time.perf_counter()
        res = self.guide(z0, targets)  # every pair in one solve
        t2 = time.perf_counter()
        texts: list[str] = []
        for i in range(0, len(examples), bs):
            texts += self.decode(
                res.z[i : i + bs], examples[i : i + bs], decoding=decoding, seeds=seeds[i : i + bs]
            )
        t3 = time.perf_counter()
        self.timings["encode"] += t1 - t0
        self.timings["ode"] += t2 - t1
        self.timings["decode"] += t3 - t2
        c = self.cfg.ode
        info: dict[str, Any] = {"start": c.start, "guidance_scale": c.guidance_scale}
        if c.guidance_scale > 0:
            info["solver"] = c.solver
            if c.solver in FIXED_GRID:
                info["step_size"] = c.step_size
            else:
                info.update(atol=c.atol, rtol=c.rtol)
            info["beta"] = [c.beta_min, c.beta_max]
            if c.weights:
                info["weights"] = dict(c.weights)
        info["nfe"] = res.nfe
        return Generations(texts, shared={"latent": info})

    def configure(self, cfg: CVAEConfig) -> None:
        """Take generation-time settings (`model.ode.*`) from CFG; everything else is fixed by training."""
        if to_dict(cfg) | {"ode": None} != to_dict(self.cfg) | {"ode": None}:
            changed = [
                k for k, v in to_dict(cfg).items() if k != "ode" and v != to_dict(self.cfg)[k]
            ]
            raise UsageError(
                f"only model.ode.* can change at generation; these are fixed by training: {', '.join(changed)}"
            )
        check_ode_weights(cfg.ode, self.attributes)
        self.cfg = cfg

    # -- persistence ------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        net = self.net
        net.decoder.save_pretrained(directory / "decoder")
        net.prior_encoder.save_pretrained(directory / "prior_encoder")
        if net.posterior_encoder is not None:
            net.posterior_encoder.save_pretrained(directory / "posterior_encoder")
        rest = {
            k: v.detach().contiguous().cpu()
            for k, v in net.state_dict().items()
            if k.split(".", 1)[0] not in _SUBMODELS
        }
        save_file(rest, str(directory / LATENT_FILE))
        meta = {
            "attributes": self.attributes,
            "latent_dim": self.cfg.latent_dim,
            "shared_encoder": net.posterior_encoder is None,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))
        self.tokenizer.save_pretrained(directory)
        if self.encoder_tokenizer is not self.tokenizer:
            self.encoder_tokenizer.save_pretrained(directory / "encoder_tokenizer")


# -- building and loading -------------------------------------------------------------------------


def _drop_pooler(encoder: nn.Module) -> nn.Module | None:
    """Remove an encoder's own pooler (unused: every parameter must get a gradient under DDP); return it."""
    pooler = getattr(encoder, "pooler", None)
    if isinstance(pooler, nn.Module):
        setattr(encoder, "pooler", None)  # noqa: B010
        return pooler
    return None


def check_ode_weights(ode: ODEConfig, attributes: dict[str, list[str]]) -> None:
    """`model.ode.weights` may only name declared attributes (a typo would silently weigh nothing)."""
    names = list(attributes)
    for name in ode.weights:
        if name not in attributes:
            raise UsageError(
                f"model.ode.weights.{name}: expected a declared attribute ({', '.join(names)}), "
                f"got {name!r}{did_you_mean(name, names)}"
            )


def _load_encoder(
    path: str | Path, *, pooler: bool = True, **knob: Any
) -> tuple[nn.Module, nn.Module | None]:
    """(encoder without pooler, its pretrained pooler if it had one and POOLER is set).

    Checkpoints of this method store encoders without their pooler, so they load with
    `add_pooling_layer=False` where the architecture takes it. KNOB: `backbone.knobs(cfg)`.
    """
    from transformers import AutoConfig

    config = from_pretrained(AutoConfig, path, what="encoder", weights=False)
    if getattr(config, "is_encoder_decoder", False):
        raise UsageError(
            f"{path}: the cvae encoders must be encoder-only models (BERT, RoBERTa, DeBERTa, ...)"
        )
    enc = None
    if not pooler:
        try:
            enc = load_encoder(path, add_pooling_layer=False, **knob)
        except TypeError:  # the architecture has no such option
            enc = None
    if enc is None:
        enc = load_encoder(path, **knob)
    return enc, _drop_pooler(enc)


def _encoder_from_config(conf: dict[str, Any], tok: Any, **knob: Any) -> nn.Module:
    enc = encoder_from_config(conf, tok, **knob)
    _drop_pooler(enc)
    return enc


def _declared_or_found(cfg: RunConfig, examples: Iterable[Example]) -> dict[str, list[str]]:
    if cfg.data.attributes:
        return {k: list(v) for k, v in cfg.data.attributes.items()}
    found: dict[str, set[str]] = defaultdict(set)
    for ex in examples:
        for k, v in ex.attributes.items():
            found[k].add(v)
    space = {k: sorted(v) for k, v in sorted(found.items()) if len(v) >= 2}
    if not space:
        raise UsageError(
            "the cvae method needs an attribute space: declare data.attributes (attribute: [aspects]) "
            "or train on dialogues labelled with `attributes`"
        )
    logger.info(
        "attribute space found in the training data: %s",
        "; ".join(f"{k}: {', '.join(v)}" for k, v in space.items()),
    )
    return space


def build(cfg: RunConfig, ctx: BuildContext) -> CVAEModel:
    """A fresh model: pretrained or from-scratch encoders and decoder, new latent parts."""
    mcfg: CVAEConfig = cfg.model
    attributes = _declared_or_found(cfg, ctx.train_examples())
    cfg.data.attributes = attributes  # recorded in the run's config.yaml
    check_ode_weights(mcfg.ode, attributes)
    tok = dialogue_tokenizer(
        mcfg.tokenizer,
        ctx,
        render=RenderOptions(persona=mcfg.persona_in_prompt, chat_template="plain"),
        pretrained=mcfg.decoder,
    )
    if mcfg.encoder_tokenizer:
        enc_tok = load_tokenizer(mcfg.encoder_tokenizer)
    elif mcfg.encoder:
        enc_tok = load_tokenizer(mcfg.encoder)
    else:
        enc_tok = tok

    torch.manual_seed(cfg.train.seed)
    knob = knobs(mcfg)
    if mcfg.decoder_from_config:
        decoder = build_from_config(mcfg.decoder_from_config, tok, arch="causal", **knob)
    else:
        assert mcfg.decoder is not None
        decoder = load_pretrained(mcfg.decoder, arch="causal", **knob)
        if len(tok) > decoder.get_input_embeddings().weight.shape[0]:
            decoder.resize_token_embeddings(len(tok))
    if decoder.config.pad_token_id is None:
        decoder.config.pad_token_id = tok.pad_token_id
    poolers: list[nn.Module | None] = []
    encoders: list[nn.Module] = []
    for _ in range(1 if mcfg.share_encoder else 2):
        if mcfg.encoder_from_config:
            encoders.append(_encoder_from_config(mcfg.encoder_from_config, enc_tok, **knob))
            poolers.append(None)
        else:
            assert mcfg.encoder is not None
            enc, pooler = _load_encoder(mcfg.encoder, **knob)
            encoders.append(enc)
            poolers.append(pooler)
    net = CVAENetwork(
        prior_encoder=encoders[0],
        posterior_encoder=encoders[1] if len(encoders) > 1 else None,
        decoder=decoder,
        attributes=attributes,
        cfg=mcfg,
    )
    for head, pooler in zip((net.prior_head, net.posterior_head), poolers * (3 - len(poolers))):
        dense = getattr(pooler, "dense", None)
        if isinstance(dense, nn.Linear) and dense.weight.shape == head.pool.weight.shape:
            head.pool.load_state_dict(dense.state_dict())  # MIRACLE reuses BERT's pooler
    logger.info(
        "cvae: %.2fM parameters (decoder %.2fM), latent %d, attributes %s",
        sum(p.numel() for p in net.parameters()) / 1e6,
        sum(p.numel() for p in decoder.parameters()) / 1e6,
        mcfg.latent_dim,
        ", ".join(f"{k} ({'/'.join(v)})" for k, v in attributes.items()),
    )
    return CVAEModel(net, tok, enc_tok, attributes, mcfg)


def load(directory: Path, cfg: RunConfig) -> CVAEModel:
    """The model saved in a checkpoint directory."""
    from safetensors.torch import load_file

    mcfg: CVAEConfig = cfg.model
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise UsageError(f"{directory}: not a cvae checkpoint (no {META_FILE})")
    meta = json.loads(meta_path.read_text())
    attributes = {k: list(v) for k, v in meta["attributes"].items()}
    if not cfg.data.attributes:
        cfg.data.attributes = attributes
    tok = load_tokenizer(directory)
    enc_dir = directory / "encoder_tokenizer"
    enc_tok = load_tokenizer(enc_dir) if enc_dir.is_dir() else tok
    knob = knobs(mcfg)
    decoder = load_pretrained(directory / "decoder", arch="causal", **knob)
    prior, _ = _load_encoder(directory / "prior_encoder", pooler=False, **knob)
    posterior = None
    if (directory / "posterior_encoder").is_dir():
        posterior, _ = _load_encoder(directory / "posterior_encoder", pooler=False, **knob)
    net = CVAENetwork(
        prior_encoder=prior,
        posterior_encoder=posterior,
        decoder=decoder,
        attributes=attributes,
        cfg=mcfg,
    )
    state = load_file(str(directory / LATENT_FILE))
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if k.split(".", 1)[0] not in _SUBMODELS]
    if missing or unexpected:
        raise UsageError(
            f"{directory / LATENT_FILE}: does not match the recipe's model "
            f"(missing: {', '.join(missing) or '-'}; unexpected: {', '.join(unexpected) or '-'})"
        )
    return CVAEModel(net, tok, enc_tok, attributes, mcfg)
