"""What a codebook's code predictor can read from the history: the decoder's own states or a
sentence encoder's embedding (issue 23).

For a trained codebook checkpoint, every example's target codes are its persona's codes (the
persona segments encoded and snapped to the nearest codes, as in training). Two sets of features
of the same histories:
  - `decoder`: the decoder's final-layer states mean-pooled over the prompt, without a prefix (what
    `history_encoder: decoder` reads);
  - `minilm`: all-MiniLM-L6-v2's mean-pooled sentence embedding of the history text (what
    `history_encoder: sentence-transformers/all-MiniLM-L6-v2` reads).
On each, the same per-slot two-layer predictor as the method's (`SlotHeads`) is trained on the
training examples' features (full batch, AdamW, fixed epochs, seed 0) and scored on the test
examples: accuracy per slot averaged over the slots, against the best constant code per slot
(the majority on the test examples themselves, as the codebook's diagnostics report it) and the
majority of the training examples applied to the test examples.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _features(model: Any, examples: list[Any], *, minilm: Any, minilm_tok: Any) -> dict[str, Any]:
    import torch

    from personadlg.models.collate import pad_nested, pad_sequences
    from personadlg.models.render import RenderOptions, render

    net = model.net
    net.eval()
    codes, dec, enc = [], [], []
    pad = model.tokenizer.pad_token_id or 0
    seg_pad = model.encoder_tokenizer.pad_token_id or 0
    budget = model.cfg.max_length - model.cfg.max_response_tokens - 1
    with torch.no_grad():
        for i in range(0, len(examples), 64):
            chunk = examples[i : i + 64]
            segs = [model.segment_ids(ex.persona) for ex in chunk]
            seg_ids, seg_len = pad_nested(segs, seg_pad)
            codes.append(net.quantize(net.encode_segments(seg_ids, seg_len)))
            prompts = [model._prompt(ex, budget) for ex in chunk]
            width = max(map(len, prompts))
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, p in enumerate(prompts):  # left padding, as generation pads
                ids[j, width - len(p) :], mask[j, width - len(p) :] = torch.tensor(p), 1
            saved = net.cfg.history_pool
            net.cfg.history_pool = "mean"
            dec.append(net.history_state(ids, mask, ids.new_full((len(chunk),), width - 1)))
            net.cfg.history_pool = saved
            hist = [
                render(
                    ex,
                    minilm_tok,
                    RenderOptions(chat_template="plain"),
                    max_prompt_tokens=min(budget, 256),
                    with_target=False,
                ).prompt_ids
                for ex in chunk
            ]
            h_ids, h_mask = pad_sequences(hist, minilm_tok.pad_token_id or 0)
            states = minilm(input_ids=h_ids, attention_mask=h_mask).last_hidden_state.float()
            w = h_mask.unsqueeze(-1).float()
            enc.append((states * w).sum(1) / w.sum(1))
    return {"codes": torch.cat(codes), "decoder": torch.cat(dec), "minilm": torch.cat(enc)}


def _fit_and_score(
    x_tr: Any, y_tr: Any, x_te: Any, y_te: Any, *, n_codes: int, epochs: int = 300
) -> float:
    """Accuracy (%) per slot averaged over the slots of a SlotHeads predictor trained on (x, y)."""
    import torch

    from personadlg.models.codebook.network import SlotHeads

    torch.manual_seed(0)
    mean, std = x_tr.mean(0), x_tr.std(0).clamp(min=1e-6)
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    m, d = y_tr.shape[1], x_tr.shape[1]
    heads = SlotHeads(m, d, d, n_codes)
    opt = torch.optim.AdamW(heads.parameters(), lr=1e-3, weight_decay=0.01)
    for _ in range(epochs):
        heads.train()
        loss = torch.nn.functional.cross_entropy(heads(x_tr).reshape(-1, n_codes), y_tr.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    heads.eval()
    with torch.no_grad():
        pred = heads(x_te).argmax(-1)
    return 100.0 * float((pred == y_te).float().mean(0).mean())


def probe(
    checkpoint: Path, train_path: Path, test_path: Path, *, max_train: int = 4000
) -> dict[str, Any]:
    """Code-prediction accuracy from the decoder's states and from MiniLM's embeddings (see the
    module docstring) for the codebook CHECKPOINT, trained on TRAIN_PATH's examples (at most
    MAX_TRAIN, evenly spaced) and scored on TEST_PATH's."""
    import torch
    from transformers import AutoModel

    from personadlg.generation.generate import load_examples
    from personadlg.models.backbone import load_tokenizer
    from personadlg.models.loading import from_pretrained
    from personadlg.training.checkpoint import load_checkpoint

    _, model = load_checkpoint(checkpoint)
    minilm = from_pretrained(AutoModel, MINILM, what="encoder").eval()
    minilm_tok = load_tokenizer(MINILM)
    train = [ex for ex in load_examples(train_path, "all") if ex.persona]
    if len(train) > max_train:
        step = len(train) / max_train
        train = [train[int(i * step)] for i in range(max_train)]
    test = [ex for ex in load_examples(test_path, "all") if ex.persona]
    tr = _features(model, train, minilm=minilm, minilm_tok=minilm_tok)
    te = _features(model, test, minilm=minilm, minilm_tok=minilm_tok)
    n = model.cfg.n_codes
    y_tr, y_te = tr["codes"], te["codes"]
    m = y_te.shape[1]
    best_constant = (
        100.0
        * sum(Counter(y_te[:, j].tolist()).most_common(1)[0][1] / len(y_te) for j in range(m))
        / m
    )
    train_majority = 100.0 * float(
        torch.stack(
            [
                (y_te[:, j] == Counter(y_tr[:, j].tolist()).most_common(1)[0][0]).float().mean()
                for j in range(m)
            ]
        ).mean()
    )
    return {
        "train_examples": len(train),
        "test_examples": len(test),
        "slots": m,
        "codes_used_test": len(set(y_te.flatten().tolist())),
        "acc_decoder_states": _fit_and_score(tr["decoder"], y_tr, te["decoder"], y_te, n_codes=n),
        "acc_minilm": _fit_and_score(tr["minilm"], y_tr, te["minilm"], y_te, n_codes=n),
        "best_constant": best_constant,
        "train_majority": train_majority,
        "decoder_dim": int(tr["decoder"].shape[1]),
        "minilm_dim": int(tr["minilm"].shape[1]),
    }
