"""One tokenization setting for every lexical metric.

`13a` (sacrebleu's default, ours too), `intl`, `zh`, `char`, `whitespace`, or `hf:<tokenizer dir>`
(e.g. a BERT WordPiece tokenizer, as MORPHEUS used). Lower-casing is a separate option, off by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from personadlg.errors import UsageError

if TYPE_CHECKING:
    from personadlg.metrics.base import EvalData

NAMES = ("13a", "intl", "zh", "char", "whitespace")


@lru_cache(maxsize=8)
def get_tokenizer(name: str, lowercase: bool = False) -> Callable[[str], list[str]]:
    """A function text → tokens for NAME; the same object for the same arguments."""
    if name.startswith("hf:"):
        from personadlg.models.backbone import load_tokenizer

        tok = load_tokenizer(name[3:])

        def base(text: str) -> list[str]:
            return list(tok.tokenize(text))
    elif name == "whitespace":

        def base(text: str) -> list[str]:
            return text.split()
    elif name in NAMES:
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
        from sacrebleu.tokenizers.tokenizer_char import TokenizerChar
        from sacrebleu.tokenizers.tokenizer_intl import TokenizerV14International
        from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

        sb = {
            "13a": Tokenizer13a,
            "intl": TokenizerV14International,
            "zh": TokenizerZh,
            "char": TokenizerChar,
        }[name]()

        def base(text: str) -> list[str]:
            return sb(text).split()
    else:
        raise UsageError(
            f"--tokenize {name!r}: expected one of {', '.join(NAMES)} or hf:<tokenizer dir>"
        )

    if lowercase:
        return lambda text: base(text.lower())
    return base


def tokenizer_tag(name: str) -> str:
    """How the tokenizer appears in signatures (a path is shortened to its last component)."""
    if name.startswith("hf:"):
        return "hf:" + name[3:].rstrip("/").split("/")[-1]
    return name


@dataclass
class TokenSetting:
    """The tokenizer (NAME) and lower-casing every lexical metric of a run shares."""

    tokenize: str = "13a"
    lowercase: bool = False

    def __call__(self, text: str) -> list[str]:
        return get_tokenizer(self.tokenize, self.lowercase)(text)

    def of(self, data: EvalData, column: str = "generations") -> list[list[str]]:
        """A column of DATA in this setting's tokens (computed once per setting)."""
        return data.tokenized(column, self, f"{self.tokenize}|{self.lowercase}")

    def tags(self) -> dict[str, str]:
        return {"tok": tokenizer_tag(self.tokenize), "lc": "yes" if self.lowercase else "no"}
