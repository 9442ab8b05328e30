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
