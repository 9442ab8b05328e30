"""`eval --judge`: the LLM judge metrics against the real local OpenAI-compatible server (with faults)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from personadlg.errors import ConfigError, UsageError
from personadlg.llm.parse import ParseError
from personadlg.llm.retries import FatalAPIError
from personadlg.metrics.base import Computed
from personadlg.metrics.catalog import EvalOptions
from personadlg.metrics.evaluate import evaluate_data
from personadlg.metrics.judge import is_judge_recipe, load_judge_recipe
from personadlg.metrics.judge.agreement import add_agreement, cohen_kappa
from personadlg.metrics.judge.validate import InvalidJudgement, parse_answer, parse_score
from tests.conftest import read_jsonl, write_jsonl

KEY = "sk-test-JUDGE-NEVER-WRITE-ME-5151"
JUDGES = ["judge-persona", "judge-attributes", "judge-coherence"]

# what the fake judge answers, by response text
PERSONA = {"I hike up a hill every weekend.": 5, "My students keep me busy.": 4, "It rained.": 2}
COHERENCE = {"I hike up a hill every weekend.": 5, "My students keep me busy.": 3, "It rained.": 1}
ATTRS = {
    ("I hike up a hill every weekend.", "optimistic"): "yes",
    ("I hike up a hill every weekend.", "lyrical"): "no",
    ("My students keep me busy.", "pessimistic"): "yes",
    ("It rained.", "optimistic"): "no",
    ("It rained.", "pessimistic"): "no",
    ("Hello there.", "plain"): "yes",
}


def kind_of(prompt: str) -> str:
    if "Aspect to check:" in prompt:
        return "attributes"
    return "persona" if "Persona sentences" in prompt else "coherence"


def response_of(prompt: str) -> str:
    m = re.search(r"RESPONSE[^\n]*:\n(.*?)\n\n", prompt, re.S)
    assert m, prompt
    return m.group(1)


def aspect_of(prompt: str) -> str:
    m = re.search(r"Aspect to check: (.*)\n", prompt)
    assert m
    return m.group(1)


def full(resp: str) -> str:
    """The response a (possibly cut) RESP shows."""
    known = set(PERSONA) | {r for r, _ in ATTRS}
    return next(r for r in known if r.startswith(resp.removesuffix("…")))


def honest(prompt: str) -> str:
    """The fake judge: the tables above."""
    kind, resp = kind_of(prompt), full(response_of(prompt))
    if kind == "attributes":
        return json.dumps({"answer": ATTRS[(resp, aspect_of(prompt))], "reason": "because"})
    table = PERSONA if kind == "persona" else COHERENCE
    return json.dumps({"score": table[resp], "reason": "because"})


@pytest.fixture
def server(fake_openai):
    return fake_openai(content_for=honest)


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("PDLG_JUDGE_KEY", KEY)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # never the user's cache


def judge_set(server, *extra: str) -> list[str]:
    return [
        f"client.base_url={server.base_url}",
        "client.api_key_env=PDLG_JUDGE_KEY",
        "client.timeout=2",
        "client.backoff_base=0.01",
        "client.backoff_max=0.05",
        "client.max_retries=6",
        "limits.concurrency=3",
        *extra,
    ]


def opts(server, cache: Path, *extra: str) -> EvalOptions:
    return EvalOptions(
        judge="judge/default",
        judge_cache=str(cache),
        judge_overrides=tuple(judge_set(server, *extra)),
    )


def ex(rid, generation, *, persona=(), profile=None, context=(), target=None) -> dict:
    rec = {
        "id": rid,
        "dialogue_id": rid.split("#")[0],
        "context": [
            {"role": "user" if (len(context) - 1 - i) % 2 == 0 else "assistant", "content": t}
            for i, t in enumerate(context)
        ],
        "reference": "a reference reply",
        "persona": list(persona),
        "generation": generation,
    }
    if profile:
        rec["profile"] = profile
    if target:
        rec["target_attributes"] = target
    return rec


RECORDS = [
    ex(
        "a#1",
        "I hike up a hill every weekend.",
        persona=["i love hiking .", "i live near the mountains ."],
        profile={"age": "20s"},
        context=["hi!", "hello, how are you?", "what do you do on weekends?"],
        target={"attitude": "optimistic", "language_style": "lyrical"},
    ),
    ex(
        "b#1",
        "My students keep me busy.",
        profile={"occupation": "teacher"},
        context=["what keeps you busy?"],
        target={"attitude": "pessimistic"},
    ),
    ex("c#1", "Hello there.", target={"language_style": "plain"}),
    ex(
        "d#1",
        "It rained.",
        persona=["i have a dog ."],
        context=["how was your walk?"],
        target={"attitude": "optimistic"},
    ),
]


def evaluate(tmp_path: Path, records: list[dict], o: EvalOptions, metrics=JUDGES, **kw):
    from personadlg.metrics.evaluate import read_generations

    path = write_jsonl(tmp_path / f"g{len(list(tmp_path.glob('g*.jsonl')))}.jsonl", records)
    data, _ = read_generations(path)
    return evaluate_data(data, metrics=metrics, opts=o, **kw)


def prompts(server, kind: str) -> list[str]:
    return [r["prompt"] for r in server.chat_requests() if kind_of(r["prompt"]) == kind]


def assert_key_never_written(*dirs: Path) -> None:
    for d in dirs:
        for p in Path(d).rglob("*"):
            if p.is_file():
                assert KEY.encode() not in p.read_bytes(), f"the API key leaked into {p}"


# -- replies and κ -----------------------------------------------------------------------------------


def test_replies_are_validated():
    assert parse_score('{"score": 4, "reason": "fits"}') == {"score": 4, "reason": "fits"}
    assert parse_score('Sure:\n```json\n{"Score": "5"}\n```')["score"] == 5
    assert parse_score('{"score": 3.0}')["score"] == 3
    assert parse_answer('{"answer": "Yes."}')["answer"] == "yes"
    for text, err, why in [
        ("", ParseError, "empty reply"),
        ("I would give it a 4.", ParseError, "not a JSON object"),
        ('{"rating": 4}', InvalidJudgement, "missing key 'score'"),
        ('{"score": 7}', InvalidJudgement, "integer from 1 to 5, got 7"),
        ('{"score": 3.5}', InvalidJudgement, "got 3.5"),
        ('{"score": true}', InvalidJudgement, "got true"),
    ]:
        with pytest.raises(err, match=re.escape(why)):
            parse_score(text)
    with pytest.raises(InvalidJudgement, match="expected 'yes' or 'no', got 'maybe'"):
        parse_answer('{"answer": "maybe"}')
    assert InvalidJudgement.kind == "invalid_judgement"


def sklearn_kappa(a, b) -> float:
    """sklearn.metrics.cohen_kappa_score's formula, written out: 1 - sum(w * C) / sum(w * E)."""
    labels = sorted(set(a) | set(b))
    k = len(labels)
    c = np.zeros((k, k))
    for x, y in zip(a, b):
        c[labels.index(x), labels.index(y)] += 1
    expected = np.outer(c.sum(axis=1), c.sum(axis=0)) / c.sum()
    w = 1 - np.eye(k)
    return float(1 - (w * c).sum() / (w * expected).sum())


def test_cohen_kappa_against_hand_computed_values_and_sklearns_formula():
    judge = np.array([1, 1, 0, 1, 0, 0, 1, 1, 0, 1])
    clf = np.array([1, 0, 0, 1, 0, 1, 1, 1, 1, 1])
    # by hand: agree on 7 of 10; judge yes 6/10, classifier yes 7/10
    # p_e = .6 * .7 + .4 * .3 = .54; kappa = (.7 - .54) / (1 - .54) = .16 / .46
    k = cohen_kappa(judge, clf)
    assert k["n"] == 10 and k["agreement"] == pytest.approx(70.0)
    assert k["rate_a"] == pytest.approx(60.0) and k["rate_b"] == pytest.approx(70.0)
    assert k["kappa"] == pytest.approx(0.16 / 0.46)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 2, 30), rng.integers(0, 2, 30)
        assert cohen_kappa(a, b)["kappa"] == pytest.approx(sklearn_kappa(list(a), list(b)))
    same = cohen_kappa(np.ones(5), np.ones(5))
    assert same["kappa"] is None and "both raters answered yes to every pair" in same["kappa_note"]
    assert cohen_kappa(np.ones(4), np.array([1, 0, 1, 0]))["kappa"] == pytest.approx(0.0)
    assert cohen_kappa(np.zeros(0), np.zeros(0))["kappa"] is None


def test_agreement_section_from_binary_cells():
    nan = np.nan
    judge = Computed(
        aggregate=lambda idx: 0.0,
        cells={"attitude": np.array([1, 0, 1, nan, 1]), "style": np.array([nan, 1, 1, 0, nan])},
    )
    clf = Computed(
        aggregate=lambda idx: 0.0,
        cells={"attitude": np.array([1, 1, 1, 0, nan]), "style": np.array([0, 1, 0, 0, 1])},
    )
    report: dict = {}
    add_agreement(report, {"judge-attributes": judge, "personalization-acc": clf})
    a = report["agreement"]
    att, sty, pooled = a["by_attribute"]["attitude"], a["by_attribute"]["style"], a["pooled"]
    assert att["n"] == 3 and att["agreement"] == pytest.approx(100 * 2 / 3)
    assert att["kappa"] is not None and att["judge_yes"] == pytest.approx(100 * 2 / 3)
    assert att["classifier_yes"] == pytest.approx(100.0) and att["kappa"] == pytest.approx(0.0)
    assert sty["n"] == 3 and sty["kappa"] == pytest.approx(sklearn_kappa([1, 1, 0], [1, 0, 0]))
    assert pooled["n"] == 6
    assert pooled["kappa"] == pytest.approx(sklearn_kappa([1, 0, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]))
    report = {}
    add_agreement(report, {"judge-attributes": judge})
    assert "agreement" not in report


# -- the recipe --------------------------------------------------------------------------------------------


def test_the_bundled_recipe_loads_and_bad_ones_are_refused(tmp_path):
    cfg = load_judge_recipe("judge/default", ["client.model=gpt-4o"])
    assert cfg.client.model == "gpt-4o" and cfg.client.params == {
        "temperature": 0,
        "max_tokens": 150,
    }
    assert cfg.judge.context_turns == 6 and cfg.judge.max_invalid == 2 and cfg.mode == "live"
    assert cfg.cache_path() == tmp_path / "xdg" / "personadlg" / "judge"
    assert cfg.cache_path("here") == Path("here")
    from personadlg.config import read_yaml, resolve_recipe
    from personadlg.data.synth import is_synth_recipe

    raw = read_yaml(resolve_recipe("judge/default"))
    assert is_judge_recipe(raw) and not is_synth_recipe(raw)
    with pytest.raises(ConfigError) as info:
        load_judge_recipe("judge/default", ["judge.context_turn=3", "limits.concurrency=0"])
    assert "unknown key 'judge.context_turn'" in str(info.value)
    with pytest.raises(ConfigError, match="not a judge recipe"):
        load_judge_recipe("profile/infer")
    with pytest.raises(ConfigError, match="is a training recipe"):
        load_judge_recipe("finetune/tiny")
    t = tmp_path / "t.txt"
    t.write_text("rate $response given $persona and $mood\n")
    cfg = load_judge_recipe("judge/default", [f"judge.templates.persona={t}"])
    from personadlg.metrics.judge.prompts import load_rubric

    with pytest.raises(UsageError, match=r"unknown placeholder\(s\) \['mood'\]"):
        load_rubric(cfg, "persona")
    from personadlg.metrics.judge import describe_judge_recipe

    data, kind = describe_judge_recipe("judge/default", ["client.model=gpt-4o"])
    assert data["client"]["model"] == "gpt-4o" and "judge" in data and "source" not in data
    assert kind.startswith("eval --judge, gpt-4o, rubrics persona sha256:")
    with pytest.raises(UsageError, match="unknown placeholder"):
        describe_judge_recipe("judge/default", [f"judge.templates.persona={t}"])


# -- the metrics against the server --------------------------------------------------------------------------


ASPECTS = [
    "attributes.attitude.optimistic.description=Sees the bright side.",
    "attributes.attitude.optimistic.style=answers cheerfully",
    "attributes.attitude.pessimistic.description=Expects the worst.",
]


def test_rubrics_render_what_the_judge_is_shown(server, tmp_path):
    o = opts(server, tmp_path / "cache", "judge.context_turns=2", "judge.max_chars=24", *ASPECTS)
    evaluate(tmp_path, RECORDS[:2], o)
    reqs = server.chat_requests()
    assert all(len(r["body"]["messages"]) == 1 for r in reqs)
    assert all(
        r["body"]["temperature"] == 0
        and r["body"]["max_tokens"] == 150
        and r["body"]["response_format"] == {"type": "json_object"}
        for r in reqs
    )
    (persona,) = [p for p in prompts(server, "persona") if "hiking" in p]
    assert persona.split("\n\nRate the fit")[0] == (
        "You are a strict, fair judge of personalized dialogue. An assistant plays a speaker "
        "described by persona sentences and/or a profile. Rate how well the speaker's RESPONSE "
        "fits that speaker.\n\n"
        "Persona sentences (what the speaker says about themself):\n"
        "- i love hiking .\n"
        "- i live near the mountai…\n\n"  # cut at judge.max_chars
        "Profile (key: value):\n"
        "- age: 20s\n\n"
        "Conversation so far (oldest first):\n"  # the last judge.context_turns turns
        "Assistant: hello, how are you?\n"
        "User: what do you do on weeke…\n\n"
        "RESPONSE of the speaker:\n"
        "I hike up a hill every…"
    )
    assert "1 = contradicts the persona" in persona and '{"score": 4, "reason"' in persona
    profile_only = [p for p in prompts(server, "persona") if "teacher" in p]
    assert (
        "Persona sentences (what the speaker says about themself):\n(none given)\n\n"
        "Profile (key: value):\n- occupation: teacher\n\n" in profile_only[0]
    )
    attrs = {
        aspect_of(p) + "|" + p.split("Attribute: ")[1].split("\n")[0]: p
        for p in prompts(server, "attributes")
    }
    assert set(attrs) == {"optimistic|attitude", "lyrical|language_style", "pessimistic|attitude"}
    declared = attrs["optimistic|attitude"]
    assert declared.split("RESPONSE:")[0] == (
        "You are a strict, fair judge of personalized dialogue. Decide whether a RESPONSE shows "
        "one aspect of a personal attribute of its speaker.\n\n"
        "Attribute: attitude\n"
        "Its aspects:\n"
        "- optimistic: Sees the bright side. Style: answers cheerfully.\n"
        "- pessimistic: Expects the worst.\n\n"
        "Aspect to check: optimistic\n"
        "Definition: Sees the bright side. Style: answers cheerfully.\n\n"
    )
    assert '{"answer": "yes", "reason"' in declared
    undeclared = attrs["lyrical|language_style"]
    assert (
        "Its aspects:\n(not declared: judge from the names)\n\nAspect to check: lyrical\n"
        "(no definition given: judge from the name)\n\n" in undeclared
    )
    (coherence,) = [p for p in prompts(server, "coherence") if "what keeps you busy?" in p]
    assert coherence.split("\n\nRate the coherence")[0] == (
        "You are a strict, fair judge of dialogue. Rate how well a RESPONSE fits the "
        "conversation it answers.\n\n"
        "Conversation so far (oldest first):\n"
        "User: what keeps you busy?\n\n"
        "RESPONSE (the next turn of the Assistant):\n"
        "My students keep me bus…"
    )


def test_scores_are_the_mean_of_the_judges_replies(server, tmp_path):
    r = evaluate(tmp_path, RECORDS, opts(server, tmp_path / "cache"))
    m = r["metrics"]
    # judge-persona: a (persona + profile) 5, b (profile only) 4, c (none: not judged), d 2
    assert m["judge-persona"]["value"] == pytest.approx((5 + 4 + 2) / 3)
    assert m["judge-persona"]["n"] == 3 and m["judge-persona"]["judged"] == 3
    assert np.allclose(r["_per_example"]["judge-persona"], [5, 4, np.nan, 2], equal_nan=True)
    # judge-coherence: c has no context
    assert m["judge-coherence"]["value"] == pytest.approx((5 + 3 + 1) / 3)
    # judge-attributes: a optimistic yes, a lyrical no, b pessimistic yes, c plain yes, d optimistic no
    assert m["judge-attributes"]["value"] == pytest.approx(100 * 3 / 5)
    assert m["judge-attributes"]["by_attribute"] == pytest.approx(
        {"attitude": 100 * 2 / 3, "language_style": 50.0}
    )
    assert m["judge-attributes"]["n"] == 5
    assert np.allclose(r["_per_example"]["judge-attributes"], [0.5, 1, 1, 0], equal_nan=True)
    cells = r["_prepared"]["judge-attributes"].cells
    assert np.allclose(cells["attitude"], [1, 1, np.nan, 0], equal_nan=True)
    assert Counter(kind_of(x["prompt"]) for x in server.chat_requests()) == {
        "persona": 3,
        "attributes": 5,
        "coherence": 3,
    }
    for name in JUDGES:
        d = m[name]
        assert d["failed"] == 0 and d["failed_ids"] == [] and d["cached"] == 0
        assert d["requests"] == d["judged"] and d["cost"] > 0
        assert d["judge"]["model"] == "gpt-4o-mini" and d["judge"]["template"].startswith("sha256:")
        sig = d["signature"]
        assert sig.startswith(f"{name}|model:gpt-4o-mini|base_url:127.0.0.1:")
        assert f"template:{d['judge']['template']}|" in sig and sig.endswith("|v:0.1.0")
        assert "params:temperature=0,max_tokens=150,response_format=json_object" in sig
    assert "|scale:1-5|context:last6|" in m["judge-persona"]["signature"]
    assert "|agg:mean|" in m["judge-coherence"]["signature"]
    assert "|answer:yes-no|aspects:names|" in m["judge-attributes"]["signature"]
    r = evaluate(tmp_path, RECORDS, opts(server, tmp_path / "cache"), by_target=True)
    assert r["by_target"]["attitude=optimistic,language_style=lyrical"]["by_attribute"][
        "judge-attributes"
    ] == {"attitude": 100.0, "language_style": 0.0}


def test_invalid_replies_are_retried_then_reported_as_failed(server, tmp_path):
    calls: Counter = Counter()

    def content(prompt: str) -> str:
        kind, resp = kind_of(prompt), response_of(prompt)
        calls[(kind, resp)] += 1
        if kind == "persona" and resp == "My students keep me busy.":
            return "I'd say four." if calls[(kind, resp)] == 1 else json.dumps({"score": 4})
        if kind == "persona" and resp == "It rained.":
            return json.dumps({"score": 9, "reason": "off the scale"})  # never valid
        if kind == "attributes" and resp == "Hello there.":
            return json.dumps({"answer": "maybe"})
        return honest(prompt)

    server.content_for = content
    o = opts(server, tmp_path / "cache")
    r = evaluate(tmp_path, RECORDS, o)
    m = r["metrics"]
    assert calls[("persona", "My students keep me busy.")] == 2  # one retry, then valid
    assert calls[("persona", "It rained.")] == 3  # judge.max_invalid 2: three replies, all invalid
    p = m["judge-persona"]
    assert p["value"] == pytest.approx((5 + 4) / 2) and p["n"] == 2
    assert p["judged"] == 2 and p["failed"] == 1 and p["failed_ids"] == ["d#1|attitude=optimistic"]
    assert p["failed_by"] == {"invalid_judgement": 1}
    assert p["retries"] == {"unparseable": 1, "invalid_judgement": 2}
    assert np.isnan(r["_per_example"]["judge-persona"][3])
    a = m["judge-attributes"]
    assert a["failed"] == 1 and a["failed_ids"] == ["c#1|language_style=plain (language_style)"]
    assert a["value"] == pytest.approx(100 * 2 / 4) and a["by_attribute"]["language_style"] == 0.0
    # every row of a metric failed: no value, and the report says so
    server.content_for = lambda prompt: "no JSON here"
    r = evaluate(tmp_path, RECORDS, opts(server, tmp_path / "cache2"), metrics=["judge-coherence"])
    c = r["metrics"]["judge-coherence"]
    assert c["value"] is None and c["failed"] == 3 and c["judged"] == 0
    assert "every judge request failed (unparseable 3)" in c["note"]
    # failed judgements are retried by the next eval (and only they)
    server.content_for = honest
    n = len(server.chat_requests())
    r = evaluate(tmp_path, RECORDS, o)
    again = [(kind_of(x["prompt"]), response_of(x["prompt"])) for x in server.chat_requests()[n:]]
    assert sorted(again) == [("attributes", "Hello there."), ("persona", "It rained.")]
    assert r["metrics"]["judge-persona"]["value"] == pytest.approx((5 + 4 + 2) / 3)
    assert r["metrics"]["judge-persona"]["failed"] == 0


def test_transport_faults_are_retried_and_change_nothing(server, tmp_path):
    clean = evaluate(tmp_path, RECORDS, opts(server, tmp_path / "clean"))
    n = len(server.chat_requests())
    server.script.extend(["429:0.01", "500", "drop", "malformed", "503"])
    faulty = evaluate(tmp_path, RECORDS, opts(server, tmp_path / "faulty"))
    assert len(server.chat_requests()) - n == n + 5  # every fault cost one retry
    for name in JUDGES:
        assert faulty["metrics"][name]["value"] == clean["metrics"][name]["value"]
        assert faulty["metrics"][name]["failed"] == 0
    retries = Counter()
    for name in JUDGES:
        retries.update(faulty["metrics"][name].get("retries", {}))
    assert retries == {"rate_limit": 1, "server_error": 2, "connection": 1, "malformed_response": 1}


def test_the_cache_makes_reevaluation_free_and_new_settings_make_new_requests(server, tmp_path):
    cache = tmp_path / "cache"
    first = evaluate(tmp_path, RECORDS, opts(server, cache))
    n = len(server.chat_requests())
    again = evaluate(tmp_path, RECORDS, opts(server, cache))
    assert len(server.chat_requests()) == n  # zero requests
    for name in JUDGES:
        assert again["metrics"][name]["value"] == first["metrics"][name]["value"]
        assert again["metrics"][name]["signature"] == first["metrics"][name]["signature"]
        assert again["metrics"][name]["requests"] == 0 and again["metrics"][name]["cost"] == 0
        assert again["metrics"][name]["cached"] == first["metrics"][name]["judged"]
    # the same generations under other ids, in another file: still free
    moved = [{**r, "id": "x" + r["id"], "dialogue_id": "x" + r["dialogue_id"]} for r in RECORDS]
    evaluate(tmp_path, moved, opts(server, cache))
    assert len(server.chat_requests()) == n
    # another model: every request anew
    evaluate(tmp_path, RECORDS, opts(server, cache, "client.model=gpt-4o"))
    assert len(server.chat_requests()) == 2 * n
    assert all(x["body"]["model"] == "gpt-4o" for x in server.chat_requests()[n:])
    # another persona rubric: only judge-persona asks again
    t = tmp_path / "persona.txt"
    t.write_text(
        (Path(__file__).resolve().parents[2] / "personadlg/assets/prompts/judge_persona.txt")
        .read_text()
        .replace("strict, fair judge", "careful judge")
    )
    r = evaluate(tmp_path, RECORDS, opts(server, cache, f"judge.templates.persona={t}"))
    new = server.chat_requests()[2 * n :]
    assert len(new) == 3 and all("careful judge" in x["prompt"] for x in new)
    assert (
        r["metrics"]["judge-persona"]["judge"]["template"]
        != first["metrics"]["judge-persona"]["judge"]["template"]
    )
    assert (
        r["metrics"]["judge-persona"]["signature"] != first["metrics"]["judge-persona"]["signature"]
    )
    journal = read_jsonl(cache / "journal.jsonl")
    assert all(e["status"] == "ok" for e in journal) and len(journal) == 2 * n + 3


def test_an_auth_error_stops_the_run_and_keeps_what_was_judged(server, tmp_path):
    cache = tmp_path / "cache"
    o = opts(server, cache, "limits.concurrency=1")
    server.script.extend([None, None, "401"])  # type: ignore[list-item]
    with pytest.raises(FatalAPIError, match=re.escape("eval --judge stopped: the API refused")):
        evaluate(tmp_path, RECORDS, o, metrics=["judge-attributes"])
    done = [(response_of(x["prompt"]), aspect_of(x["prompt"])) for x in server.chat_requests()[:2]]
    n = len(server.chat_requests())
    r = evaluate(tmp_path, RECORDS, o, metrics=["judge-attributes"])
    after = [(response_of(x["prompt"]), aspect_of(x["prompt"])) for x in server.chat_requests()[n:]]
    assert not set(done) & set(after) and len(after) == 3
    assert r["metrics"]["judge-attributes"]["cached"] == 2
    assert r["metrics"]["judge-attributes"]["value"] == pytest.approx(60.0)


def test_cli_a_quota_error_exits_1_and_keeps_the_cache(server, tmp_path, cli):
    p = write_jsonl(tmp_path / "g.jsonl", RECORDS)
    args = ["eval", p, *cli_judge(server, "limits.concurrency=1"), "--judge-cache", tmp_path / "c"]
    server.script.extend([None, "quota"])  # type: ignore[list-item]
    r = cli(*args, "--metrics", "judge-coherence")
    assert r.code == 1 and "eval --judge stopped: the account is out of quota" in r.stderr
    assert "Traceback" not in r.stderr and KEY not in r.stdout + r.stderr
    r = cli(*args, "--metrics", "judge-coherence", "--json")
    assert r.code == 0 and r.json()["metrics"]["judge-coherence"]["cached"] == 1
    assert len(server.chat_requests()) == 2 + 2


def test_a_server_echoing_the_key_never_gets_it_written(tmp_path, fake_openai):
    server = fake_openai(
        echo_auth=True,
        content_for=honest,
        fault_for=lambda prompt: "400" if response_of(prompt) == "It rained." else None,
    )
    r = evaluate(tmp_path, RECORDS, opts(server, tmp_path / "cache"))
    assert r["metrics"]["judge-persona"]["failed_by"] == {"http_400": 1}
    failed = [
        e for e in read_jsonl(tmp_path / "cache" / "journal.jsonl") if e["status"] == "failed"
    ]
    assert failed and all("[REDACTED]" in e["error"] for e in failed)
    assert_key_never_written(tmp_path)


# -- the command line ---------------------------------------------------------------------------------------


def cli_judge(server, *extra: str) -> list[str]:
    out = ["--judge", "judge/default"]
    for s in judge_set(server, *extra):
        out += ["--judge-set", s]
    return out


def test_cli_report_per_example_compare_and_no_key_anywhere(server, tmp_path, cli):
    a = write_jsonl(tmp_path / "a.jsonl", RECORDS)
    other = [dict(r) for r in RECORDS]
    other[1] = {**other[1], "generation": "It rained."}  # a new generation: 1 + 1 + 1 new requests
    b = write_jsonl(tmp_path / "b.jsonl", other)
    cache = tmp_path / "cache"
    args = [*cli_judge(server), "--judge-cache", cache]
    outputs = []
    r = cli("eval", a, *args, "--per-example", tmp_path / "pe.jsonl", "--out", tmp_path / "r.json")
    outputs.append(r)
    assert r.code == 0, r.stderr
    assert "LLM judge: gpt-4o-mini at 127.0.0.1:" in r.stdout and "judge-persona" in r.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["metrics"]["judge-persona"]["value"] == pytest.approx(11 / 3)
    assert "judge-attributes" in report["metrics"] and "judge-coherence" in report["metrics"]
    rows = {x["id"]: x for x in read_jsonl(tmp_path / "pe.jsonl")}
    assert rows["a#1|attitude=optimistic,language_style=lyrical"]["judge-persona"] == 5
    assert rows["c#1|language_style=plain"]["judge-persona"] is None  # no persona, no profile
    assert rows["d#1|attitude=optimistic"]["judge-coherence"] == 1
    n = len(server.chat_requests())
    assert n == 11
    r = cli("eval", a, "--compare", b, *args, "--metrics", ",".join(JUDGES), "--json")
    outputs.append(r)
    assert r.code == 0, r.stderr
    assert len(server.chat_requests()) == n + 3  # a from the cache; of b only the new generation
    systems = r.json()["systems"]
    pb = systems[str(b)]["metrics"]["judge-persona"]
    assert pb["value"] == pytest.approx((5 + 2 + 2) / 3) and pb["cached"] == 2
    assert systems[str(a)]["metrics"]["judge-persona"]["requests"] == 0
    assert "judge-persona" in r.json()["comparisons"]["vs_base"][str(b)]
    r = cli("eval", a, "--compare", b, *args, "--metrics", "judge-persona")
    outputs.append(r)
    assert r.code == 0 and "LLM judge" in r.stdout and len(server.chat_requests()) == n + 3
    for res in outputs:
        assert KEY not in res.stdout and KEY not in res.stderr
    assert_key_never_written(tmp_path)


def test_cli_failures_are_shown_and_default_plan_skips_with_reasons(server, tmp_path, cli):
    server.content_for = lambda p: (
        json.dumps({"score": 0})
        if kind_of(p) == "persona" and response_of(p) == "It rained."
        else honest(p)
    )
    no_context = [{**r, "context": [], "persona": [], "profile": {}} for r in RECORDS]
    p = write_jsonl(tmp_path / "g.jsonl", no_context)
    r = cli("eval", p, *cli_judge(server), "--judge-cache", tmp_path / "c", "--json")
    assert r.code == 0, r.stderr
    rep = r.json()
    assert rep["skipped"]["judge-persona"] == "no record has a persona or a profile"
    assert rep["skipped"]["judge-coherence"] == "no record has a context"
    assert rep["metrics"]["judge-attributes"]["judged"] == 5
    p = write_jsonl(tmp_path / "h.jsonl", RECORDS)
    r = cli(
        "eval", p, *cli_judge(server), "--judge-cache", tmp_path / "c", "--metrics", "judge-persona"
    )
    assert r.code == 0, r.stderr
    assert re.search(
        r"judge-persona: 1 failed \(invalid_judgement 1\), left out of the value: d#1", r.stdout
    )
    assert KEY not in r.stdout and KEY not in r.stderr


def test_cli_agreement_with_a_real_tiny_classifier(server, tmp_path, cli, tiny_tokenizer_dir):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    labels = ["optimistic", "pessimistic"]
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
        id2label=dict(enumerate(labels)),
        label2id={n: i for i, n in enumerate(labels)},
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    clf = tmp_path / "cls-attitude"
    BertForSequenceClassification(cfg).save_pretrained(clf)
    tok.save_pretrained(clf)
    p = write_jsonl(tmp_path / "g.jsonl", RECORDS)
    r = cli(
        "eval", p, *cli_judge(server), "--judge-cache", tmp_path / "c",
        "--classifier", f"attitude={clf}", "--metrics", "judge-attributes,personalization-acc",
        "--per-example", tmp_path / "pe.jsonl", "--json",
    )  # fmt: skip
    assert r.code == 0, r.stderr
    a = r.json()["agreement"]
    assert a["between"] == ["judge-attributes", "personalization-acc"]
    assert set(a["by_attribute"]) == {"attitude"}  # the only attribute with a classifier
    rows = read_jsonl(tmp_path / "pe.jsonl")
    pairs = [
        (
            1.0
            if ATTRS[(rec["generation"], rec["target_attributes"]["attitude"])] == "yes"
            else 0.0,
            row["personalization-acc"],
        )
        for rec, row in zip(RECORDS, rows)
        if "attitude" in rec.get("target_attributes", {})
    ]
    judge_y = np.array([j for j, _ in pairs])
    clf_y = np.array([c for _, c in pairs])
    want = cohen_kappa(judge_y, clf_y)
    got = a["by_attribute"]["attitude"]
    assert got["n"] == 3 == a["pooled"]["n"], a
    assert got["agreement"] == pytest.approx(want["agreement"])
    assert got["kappa"] == (None if want["kappa"] is None else pytest.approx(want["kappa"]))
    r = cli(
        "eval", p, *cli_judge(server), "--judge-cache", tmp_path / "c",
        "--classifier", f"attitude={clf}", "--metrics", "judge-attributes,personalization-acc",
    )  # fmt: skip
    assert r.code == 0 and "agreement of judge-attributes with personalization-acc" in r.stdout


def test_cli_missing_key_dry_run_and_bad_usage(server, tmp_path, cli, monkeypatch):
    p = write_jsonl(tmp_path / "g.jsonl", RECORDS)
    cache = tmp_path / "cache"
    args = ["eval", p, *cli_judge(server), "--judge-cache", cache]
    monkeypatch.delenv("PDLG_JUDGE_KEY")
    r = cli(*args, "--dry-run", "--json")
    assert r.code == 0, r.stderr
    plan = r.json()
    assert plan["metrics"]["judge-persona"]["to_send"] == 3
    assert plan["metrics"]["judge-attributes"]["to_send"] == 5
    assert plan["total"]["to_send"] == 11 and plan["total"]["cached"] == 0
    assert plan["total"]["cost_estimate"] > 0 and plan["total"]["priced"]
    r = cli(*args, "--dry-run")
    assert r.code == 0 and "nothing sent" in r.stdout and "to send" in r.stdout
    assert server.log == [] and not cache.exists()
    r = cli(*args)
    assert r.code == 2 and "PDLG_JUDGE_KEY is not set" in r.stderr
    assert server.log == [] and not cache.exists()  # stopped before anything was sent or created
    monkeypatch.setenv("PDLG_JUDGE_KEY", KEY)
    assert cli(*args, "--metrics", "judge-coherence").code == 0
    r = cli(*args, "--dry-run", "--json")
    assert r.json()["metrics"]["judge-coherence"]["to_send"] == 0
    assert r.json()["metrics"]["judge-coherence"]["cached"] == 3
    assert r.json()["total"]["to_send"] == 8
    monkeypatch.delenv("PDLG_JUDGE_KEY")
    r = cli(*args, "--metrics", "judge-coherence", "--json")  # all cached: no key needed
    assert r.code == 0 and r.json()["metrics"]["judge-coherence"]["cached"] == 3
    # bad usage
    r = cli("eval", p, "--metrics", "judge-persona")
    assert r.code == 2 and "metric judge-persona needs --judge RECIPE" in r.stderr
    r = cli("eval", p, "--judge-set", "client.model=x")
    assert r.code == 2 and "need --judge RECIPE" in r.stderr
    r = cli("eval", p, "--dry-run")
    assert r.code == 2 and "needs --judge RECIPE" in r.stderr
    r = cli("eval", p, "--judge", "judge/default", "--judge-set", "judge.context_turns=-1")
    assert r.code == 2 and "judge.context_turns must be >= 0" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("judge:\n  max_chars: 500\n  templatez: {}\n")
    r = cli("eval", p, "--judge", bad)
    assert (
        r.code == 2 and "unknown key 'judge.templatez'" in r.stderr and "Traceback" not in r.stderr
    )
    r = cli("eval", p, "--judge", "judge/nope")
    assert r.code == 2 and "neither a file nor a bundled recipe" in r.stderr
    assert len(server.log) == 3  # only the judge-coherence run sent anything
