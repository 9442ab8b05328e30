"""The README's command examples can be run in the order written: within one code block, no two
`generate` commands write the same output (the second would be refused: the output exists), unless
one says `--overwrite` / `--append` or writes nothing (`--dry-run`)."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(text: str) -> list[list[str]]:
    """The fenced code blocks of TEXT, as their commands (continuation lines joined)."""
    blocks = []
    for body in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", body)
        blocks.append([line.split(" #")[0].strip() for line in joined.splitlines()])
    return blocks


def generate_outputs(command: str) -> str | None:
    """The file a `personadlg generate` COMMAND writes (None: another command, or none written)."""
    if not re.search(r"\bpersonadlg generate\b", command):
        return None  # (some blocks are file trees or tables, not shell)
    words = shlex.split(command)
    if {"--dry-run", "--overwrite", "--append"} & set(words):
        return None
    for flag, value in itertools.pairwise(words):
        if flag in ("-o", "--out"):
            return value
    return None


def test_generate_examples_write_distinct_outputs():
    blocks = code_blocks(README.read_text(encoding="utf-8"))
    checked = 0
    for block in blocks:
        outputs = [o for o in map(generate_outputs, block) if o is not None]
        checked += len(outputs)
        repeated = sorted({o for o in outputs if outputs.count(o) > 1})
        assert not repeated, f"a README code block writes {repeated} twice: {block}"
    assert checked >= 15  # the README's generate examples were found


def test_the_check_catches_a_repeated_output():
    block = code_blocks(
        "```bash\npersonadlg generate a -i t.jsonl -o gen.jsonl\n"
        "personadlg generate a -i t.jsonl \\\n    -o gen.jsonl do_sample=true   # again\n```\n"
    )[0]
    assert [generate_outputs(c) for c in block] == ["gen.jsonl", "gen.jsonl"]
