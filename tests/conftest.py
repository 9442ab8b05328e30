"""Test setup: offline guard, CLI runner, tiny models built from configs (never downloaded)."""

from __future__ import annotations

import os

# before anything imports transformers / huggingface_hub
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import ipaddress
import json
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
DEMO = ROOT / "personadlg" / "assets" / "demo_dialogues.jsonl"


# --------------------------------------------------------------------------------------------
# offline guard: any outbound connection fails the test; loopback and unix sockets are allowed
# --------------------------------------------------------------------------------------------


class NetworkBlocked(RuntimeError):
    pass


def _is_local(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    if isinstance(address, tuple) and address:
        host = address[0]
        if host in ("localhost", "", None):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return False


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self: socket.socket, address: object) -> object:
    if not _is_local(address):
        raise NetworkBlocked(
            f"test tried to open a network connection to {address!r}; tests must stay offline"
        )
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> object:
    if not _is_local(address):
        raise NetworkBlocked(
            f"test tried to open a network connection to {address!r}; tests must stay offline"
        )
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
    if host is not None and not _is_local(
        (host if not isinstance(host, bytes) else host.decode(), 0)
    ):
        raise NetworkBlocked(f"test tried to resolve {host!r}; tests must stay offline")
    return _real_getaddrinfo(host, *args, **kwargs)


@pytest.fixture(autouse=True)
def offline(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Block outbound connections for every test not marked `network`."""
    if request.node.get_closest_marker("network") is None:
        monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
        monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
        monkeypatch.setattr(socket, "getaddrinfo", _guarded_getaddrinfo)
    yield


# --------------------------------------------------------------------------------------------
# CLI runner: the real entry point (exit codes, stdout / stderr separated)
# --------------------------------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """`cli("stats", path, "--json")` runs `personadlg` in-process and returns a CliResult."""
    from personadlg.cli import main

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def demo_path() -> Path:
    return DEMO


def shared(*parts: str) -> Path:
    """A file of ../shared/data; the calling test is skipped when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not present: {path}")
    return path


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    """ROWS (dicts with the same keys) as a CSV file with a header."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
    )
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def dialogue(rid: str, *turns: str, **fields: object) -> dict:
    """A dialogue record with alternating user/assistant TURNS (user first)."""
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)
    ]
    return {"id": rid, "messages": messages, **fields}


# --------------------------------------------------------------------------------------------
# tiny models, built from configs and saved to temp dirs (session scope: built once)
# --------------------------------------------------------------------------------------------


def _demo_texts() -> list[str]:
    texts = []
    for line in DEMO.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        texts.extend(m["content"] for m in rec["messages"])
        texts.extend(rec.get("persona", []))
    return texts


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer (vocab 1,000) trained on the demo corpus text, saved with save_pretrained."""
    from personadlg.models.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tiny-tokenizer")
    train_tokenizer(_demo_texts(), vocab_size=1000).save_pretrained(out)
    return out


def _save_model(config: object, auto_cls: str, tokenizer_dir: Path, out: Path) -> Path:
    import torch
    import transformers
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    model = getattr(transformers, auto_cls).from_config(config)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """GPT2LMHeadModel: 2 layers, 2 heads, 32 dims, 128 positions, random weights (seed 0)."""
    from transformers import AutoTokenizer, GPT2Config

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_layer=2,
        n_head=2,
        n_embd=32,
        n_positions=128,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return _save_model(
        cfg, "AutoModelForCausalLM", tiny_tokenizer_dir, tmp_path_factory.mktemp("tiny-gpt2")
    )


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """BertModel: 2 layers, 2 heads, 32 dims, 64-dim FFN, random weights (seed 0)."""
    from transformers import AutoTokenizer, BertConfig

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
    )
    return _save_model(cfg, "AutoModel", tiny_tokenizer_dir, tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for all-MiniLM-L6-v2 with its file layout: a `BertModel` encoder checkpoint
    (2 layers, 32 dims, random weights, seed 0) and an uncased WordPiece tokenizer (vocab 800,
    trained on the demo corpus with `tokenizers`), loaded as a BertTokenizer like the real one."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel, BertTokenizer

    out = tmp_path_factory.mktemp("tiny-minilm")
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(
        _demo_texts(),
        vocab_size=800,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        show_progress=False,
    )
    wp.save_model(str(out))
    tok = BertTokenizer(vocab=str(out / "vocab.txt"), do_lower_case=True, model_max_length=512)
    (out / "vocab.txt").unlink()
    tok.save_pretrained(out)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        architectures=["BertModel"],
    )
    BertModel(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """T5ForConditionalGeneration: 2+2 layers, 2 heads, 32 dims, random weights (seed 0)."""
    from transformers import AutoTokenizer, T5Config

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
    )
    return _save_model(
        cfg, "AutoModelForSeq2SeqLM", tiny_tokenizer_dir, tmp_path_factory.mktemp("tiny-t5")
    )


# --------------------------------------------------------------------------------------------
# small, fast training setups shared by the trainer, generation and distributed tests
# --------------------------------------------------------------------------------------------

TINY = [
    "model.from_config={model_type: gpt2, n_layer: 2, n_head: 2, n_embd: 32, n_positions: 128}",
    "model.tokenizer.vocab_size=400",
    "model.max_length=96",
    "model.max_response_tokens=32",
    "train.batch_size=4",
    "train.log_every=1",
    "train.lr=3e-3",
    "generate.max_new_tokens=12",
    "generate.batch_size=4",
]


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """40 train and 8 valid dialogues of the demo corpus (~200 / ~40 examples)."""
    d = tmp_path_factory.mktemp("small-data")
    lines = DEMO.read_text(encoding="utf-8").splitlines()
    (d / "train.jsonl").write_text("\n".join(lines[:40]) + "\n", encoding="utf-8")
    (d / "valid.jsonl").write_text("\n".join(lines[40:48]) + "\n", encoding="utf-8")
    (d / "test.jsonl").write_text("\n".join(lines[48:52]) + "\n", encoding="utf-8")
    return {"train": d / "train.jsonl", "valid": d / "valid.jsonl", "test": d / "test.jsonl"}


def small_recipe(
    recipe: str, small_data: dict[str, Path], out: Path, *extra: str, settings: Sequence[str] = ()
):
    """RECIPE (a bundled method recipe) made small: SETTINGS (the method's tiny sizes), the small
    data splits, OUT as its output dir, then EXTRA overrides."""
    from personadlg.config import load_recipe

    return load_recipe(
        recipe,
        [
            *settings,
            f"data.train={small_data['train']}",
            f"data.valid={small_data['valid']}",
            f"train.output_dir={out}",
            *extra,
        ],
    )


def tiny_recipe(small_data: dict[str, Path], out: Path, *extra: str):
    return small_recipe("finetune/tiny", small_data, out, *extra, settings=TINY)


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory, small_data: dict[str, Path]) -> Path:
    """A tiny finetune checkpoint (30 steps), trained once per session: its final/ directory."""
    from personadlg.training.trainer import train

    out = tmp_path_factory.mktemp("trained-tiny")
    result = train(tiny_recipe(small_data, out, "train.max_steps=30"))
    return result.final_dir


def read_metrics(run_dir: Path) -> list[dict]:
    return [
        json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()
    ]


def train_command(small_data: dict[str, Path], run: Path, *extra: str) -> list[str]:
    """`python -m personadlg train finetune/tiny ...` on the small data, for tests that need a process."""
    import sys

    return [
        sys.executable,
        "-m",
        "personadlg",
        "train",
        "finetune/tiny",
        *TINY,
        f"data.train={small_data['train']}",
        f"train.output_dir={run}",
        *extra,
    ]


# --------------------------------------------------------------------------------------------
# the fake OpenAI-compatible API (tests/fake_openai.py)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_openai() -> Iterator[Callable[..., FakeOpenAI]]:
    """Start a fake OpenAI-compatible server: `fake_openai(**FakeOpenAI options)`; faults go in
    through its `script`, `fault_for`, `content_for` and `reply_for`. Every server started is
    stopped when the test ends."""
    servers: list[FakeOpenAI] = []

    def start(**options: Any) -> FakeOpenAI:
        server = FakeOpenAI(**options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
