"""The command line as users see it: help, version, exit codes, --json purity, start-up cost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from personadlg import __version__

COMMANDS = [
    "synth",
    "clean",
    "convert",
    "split",
    "stats",
    "train",
    "generate",
    "eval",
    "demo",
    "chat",
    "validate",
    "ls",
]


def test_help_lists_every_command(cli):
    r = cli("--help")
    assert r.code == 0
    for cmd in COMMANDS:
        assert f" {cmd} " in r.stdout, cmd


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help_with_examples(cli, cmd):
    r = cli(cmd, "--help")
    assert r.code == 0, r.stderr
    assert "Usage: personadlg " + cmd in " ".join(r.stdout.split())
    if cmd not in ("chat", "demo"):
        assert "Examples" in r.stdout


def test_version(cli):
    r = cli("--version")
    assert r.code == 0 and r.stdout.strip() == f"personadlg {__version__}"


def test_python_dash_m_and_startup_does_not_import_torch():
    code = (
        "import sys\n"
        "from personadlg.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy', 'accelerate', 'peft', 'openai') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out
    r = subprocess.run(
        [sys.executable, "-m", "personadlg", "--version"], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.strip() == f"personadlg {__version__}"


def test_usage_errors_exit_2(cli):
    assert cli("convert").code == 2
    assert cli("nosuchcommand").code == 2
    r = cli("ls", "method")
    assert r.code == 2 and "did you mean 'methods'" in r.stderr


def test_ls_everything(cli):
    r = cli("ls", "methods", "--json")
    assert r.code == 0 and [m["name"] for m in r.json()] == [
        "finetune",
        "cvae",
        "codebook",
        "lora",
        "api",
        "classifier",
    ]
    for what in ("metrics", "formats", "filters", "recipes"):
        r = cli("ls", what)
        assert r.code == 0 and r.stdout.strip()
    r = cli("ls", "methods", "--fields")
    assert "persona_in_prompt" in r.stdout


def test_validate_prints_the_resolved_recipe(cli):
    r = cli("validate", "finetune/tiny", "train.lr=3e-4", "--json")
    assert r.code == 0 and r.json()["train"]["lr"] == 3e-4
    r = cli("validate", "finetune/tiny", "train.lrr=1")
    assert r.code == 2
    assert (
        "unknown key 'train.lrr' (did you mean 'lr'?)" in r.stderr and "Traceback" not in r.stderr
    )


def test_json_output_is_pure_json_on_stdout(cli, demo_path):
    r = cli("stats", demo_path, "--json")
    json.loads(r.stdout)  # nothing else on stdout


def test_a_recipe_with_problems_is_refused_before_anything_runs(cli, tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("method: lora\nmodel: {stages: [users]}\n")
    r = cli("train", p)
    assert r.code == 2 and "model.init_from" in r.stderr and "Traceback" not in r.stderr
    assert (
        cli("train", "finetune/tiny", "train.lr=-1").code == 2
    )  # recipes are validated before anything runs


def test_debug_shows_traceback(cli, tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text("[1]\n")
    r = cli("stats", bad)
    assert r.code == 2 and r.stderr.startswith(f"error: {bad}:1:")
    with pytest.raises(Exception, match="expected a JSON object"):
        cli("--debug", "stats", bad)


@pytest.mark.parametrize(
    "content,message",
    [
        (
            b"{not json}\n",
            "x.jsonl:1: not valid JSON: Expecting property name enclosed in double quotes (column 2)",
        ),
        (
            b'"just a string"\n',
            "x.jsonl:1: expected a JSON object (dialogue record), got 'just a string'",
        ),
        (
            b'{"id": "a", "messages": [{"role": "user", "content": 3}]}\n',
            "x.jsonl:1: field 'messages[0].content': expected a string, got 3",
        ),
        (b"", "x.jsonl: empty file: expected at least one record"),
        (
            b'{"id": "a", "messages": [{"role": "user", "content": "\xc3"}]}\n',
            "x.jsonl:1: not valid UTF-8: byte 0xc3 at byte offset 54 of the line",
        ),
    ],
)
def test_bad_input_one_line_exit_2(cli, tmp_path, content, message):
    p = tmp_path / "x.jsonl"
    p.write_bytes(content)
    r = cli("stats", p)
    assert r.code == 2
    assert r.stderr.strip() == f"error: {tmp_path}/{message}"


def test_a_50_mb_single_line(cli, tmp_path):
    p = tmp_path / "big.jsonl"
    with open(p, "w") as f:
        f.write(
            json.dumps({"id": "big", "messages": [{"role": "user", "content": "a" * (50 << 20)}]})
            + "\n"
        )
        f.write(
            json.dumps(
                {
                    "id": "ok",
                    "messages": [
                        {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "hello there"},
                    ],
                }
            )
            + "\n"
        )
    r = cli("stats", p)
    assert r.code == 2
    assert (
        r.stderr.strip()
        == f"error: {p}:1: line is 50.0 MiB, longer than the limit of 16.0 MiB (set PERSONADLG_MAX_LINE_BYTES to raise it)"
    )
    r = cli(
        "clean", p, "--out", tmp_path / "c.jsonl", "--json"
    )  # clean routes it to rejects and goes on
    assert (
        r.code == 0 and r.json()["clean"] == 1 and r.json()["rejected_by_filter"] == {"invalid": 1}
    )


def test_validate_reads_profile_recipes(cli):
    r = cli("validate", "profile/infer")
    assert r.code == 0 and "OK (profile inference)" in r.stdout
    r = cli("validate", "profile/infer", "profile.sample_utterances=0")
    assert r.code == 2 and "profile.sample_utterances" in r.stderr
