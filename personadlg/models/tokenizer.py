"""Train a small tokenizer on local text with the `tokenizers` library (for from-scratch recipes).

Byte-level BPE (GPT-2 style), so any text can be encoded, wrapped in a transformers
`PreTrainedTokenizerFast` with the special tokens that decoders (bos/eos/pad), encoders
(cls/sep/mask) and seq2seq models need. Saved with `save_pretrained` like any HF tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "eos_token": "<|endoftext|>",
    "bos_token": "<|endoftext|>",
    "unk_token": "<unk>",
    "cls_token": "<cls>",
    "sep_token": "<sep>",
    "mask_token": "<mask>",
}


def train_tokenizer(
    texts: Iterable[str],
    *,
    vocab_size: int = 4000,
    min_frequency: int = 2,
    model_max_length: int = 1024,
    cls_sep: bool = False,
) -> Any:
    """Train a byte-level BPE tokenizer on TEXTS; return a `transformers.PreTrainedTokenizerFast`.

    Args:
        texts: training text, e.g. every message of the training dialogues.
        vocab_size: target vocabulary size, special tokens and the 256 byte symbols included.
        min_frequency: a merge needs at least this many occurrences.
        model_max_length: recorded in the tokenizer config.
        cls_sep: add `<cls> A <sep>` (and `<cls> A <sep> B <sep>` for pairs) like BERT, for encoders/classifiers.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(SPECIAL_TOKENS.values()))
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if cls_sep:
        cls, sep = SPECIAL_TOKENS["cls_token"], SPECIAL_TOKENS["sep_token"]
        template = processors.TemplateProcessing(
            single=f"{cls} $A {sep}",
            pair=f"{cls} $A {sep} $B:1 {sep}:1",
            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))],
        )
        tok.post_processor = processors.Sequence(
            [processors.ByteLevel(trim_offsets=False), template]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length, **SPECIAL_TOKENS
    )


def causal_tokenizer(tokenizer: Any) -> Any:
    """TOKENIZER ready to be a decoder's: an encoder's tokenizer (BERT / MiniLM: [CLS] A [SEP], no
    BOS / EOS) becomes a fast tokenizer with BOS = [CLS] prepended and EOS = [SEP], which training
    appends to every reply and generation stops at. Others are returned as they are.

    The result is a plain `PreTrainedTokenizerFast` over the same vocabulary and normaliser (an
    uncased one still lowercases), saved and reloaded with its own post-processor."""
    if tokenizer.eos_token is not None or tokenizer.sep_token is None:
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"{type(tokenizer).__name__}: a decoder needs a fast tokenizer with an end token"
        )
    import copy

    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(backend)
    bos = tokenizer.cls_token or tokenizer.sep_token
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A",
        pair=f"{bos} $A $B",
        special_tokens=[(bos, tokenizer.convert_tokens_to_ids(bos))],
    )
    specials = {
        key: getattr(tokenizer, key)
        for key in ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
        if getattr(tokenizer, key, None) is not None
    }
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=tokenizer.sep_token,
        model_max_length=tokenizer.model_max_length,
        **specials,
    )
