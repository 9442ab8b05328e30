from __future__ import annotations

import pytest

from personadlg.data.schema import Dialogue, Example, Message, expand_dialogue
from personadlg.errors import DataError

U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}


@pytest.mark.parametrize(
    "record,message",
    [
        ([1, 2], "expected a JSON object (dialogue record), got a list of 2"),
        ({"messages": [U, A]}, "field 'id': expected a non-empty string, got nothing (missing)"),
        ({"id": 3, "messages": [U, A]}, "field 'id': expected a non-empty string, got 3"),
        ({"id": ""}, "field 'id': expected a non-empty string, got ''"),
        ({"id": "x"}, "field 'messages': expected a list of messages, got nothing (missing)"),
        ({"id": "x", "messages": "hi"}, "field 'messages': expected a list of messages, got 'hi'"),
        (
            {"id": "x", "messages": []},
            "field 'messages': expected at least one message, got a list of 0",
        ),
        (
            {"id": "x", "messages": [U, "hello"]},
            "field 'messages[1]': expected an object with 'role' and 'content', got 'hello'",
        ),
        (
            {"id": "x", "messages": [U, {"role": "bot", "content": "a"}]},
            "field 'messages[1].role': expected 'user' or 'assistant', got 'bot'",
        ),
        (
            {"id": "x", "messages": [U, A, A, U]},
            "field 'messages[2].role': expected 'user', got 'assistant' (roles must alternate)",
        ),
        (
            {"id": "x", "messages": [U, A, U, U]},
            "field 'messages[3].role': expected 'assistant', got 'user' (roles must alternate)",
        ),
        (
            {"id": "x", "messages": [U, {"role": "assistant", "content": 5}]},
            "field 'messages[1].content': expected a string, got 5",
        ),
        (
            {"id": "x", "messages": [U, {"role": "assistant", "content": "  "}]},
            "field 'messages[1].content': expected a non-empty string, got '  '",
        ),
        (
            {"id": "x", "messages": [U]},
            "field 'messages': expected at least one assistant message, got none",
        ),
        (
            {"id": "x", "messages": [U, A], "persona": "i like tea"},
            "field 'persona': expected a list of strings, got 'i like tea'",
        ),
        (
            {"id": "x", "messages": [U, A], "persona": ["a", 2]},
            "field 'persona[1]': expected a string, got 2",
        ),
        (
            {"id": "x", "messages": [U, A], "attributes": {"attitude": 1}},
            "field 'attributes.attitude': expected a string, got 1",
        ),
        (
            {"id": "x", "messages": [U, A], "user_id": 42},
            "field 'user_id': expected a string or null, got 42",
        ),
        (
            {"id": "x", "messages": [U, A], "profile": {"age": [20]}},
            "field 'profile.age': expected a string, number or boolean, got a list of 1",
        ),
        (
            {"id": "x", "messages": [U, A], "meta": []},
            "field 'meta': expected an object, got a list of 0",
        ),
    ],
)
def test_invalid_dialogues_name_the_field(record, message):
    with pytest.raises(DataError) as err:
        Dialogue.from_dict(record)
    assert str(err.value) == message
    assert err.value.exit_code == 2


def test_round_trip_keeps_unknown_keys_and_omits_empty_fields():
    rec = {
        "id": "d1",
        "messages": [U, A],
        "persona": ["i like tea ."],
        "attributes": {"attitude": "optimistic"},
        "user_id": "u1",
        "profile": {"age": "20s"},
        "topic": "tea",
        "meta": {"source": "x"},
        "lang": "en",
    }
    d = Dialogue.from_dict(rec)
    assert d.extra == {"lang": "en"} and d.assistant_messages == ["hello"]
    assert d.to_dict() == rec
    assert Dialogue.from_dict({"id": "d", "messages": [A]}).to_dict() == {
        "id": "d",
        "messages": [A],
    }


def test_lenient_roles_for_clean():
    d = Dialogue.from_dict(
        {"id": "x", "messages": [U, U, {"role": "assistant", "content": ""}, A]}, strict_roles=False
    )
    assert [m.role for m in d.messages] == ["user", "user", "assistant", "assistant"]


def test_expand_dialogue_into_examples():
    d = Dialogue(
        id="d",
        messages=[
            Message("user", "a"),
            Message("assistant", "b"),
            Message("user", "c"),
            Message("assistant", "e"),
        ],
        persona=["p"],
        attributes={"attitude": "optimistic"},
        user_id="u",
    )
    exs = expand_dialogue(d)
    assert [e.id for e in exs] == ["d#1", "d#3"]
    assert [m.content for m in exs[1].context] == ["a", "b", "c"] and exs[1].reference == "e"
    assert exs[1].persona == ["p"] and exs[1].user_id == "u" and exs[1].dialogue_id == "d"
    assert [e.id for e in expand_dialogue(d, turns="last")] == ["d#3"]
    assert [m.content for m in expand_dialogue(d, max_context_turns=1)[1].context] == ["c"]
    ex = exs[0].to_dict()
    assert Example.from_dict(ex).to_dict() == ex


def test_example_validation():
    ok = Example.from_dict(
        {
            "id": "d#1",
            "context": [U],
            "reference": "x",
            "generation": "y",
            "seed": 3,
            "target_attributes": {"a": "b"},
        }
    )
    assert ok.dialogue_id == "d" and ok.generation == "y"
    with pytest.raises(DataError, match="field 'generation': expected a string, got 5"):
        Example.from_dict({"id": "d#1", "context": [], "generation": 5})
    with pytest.raises(DataError, match="field 'seed': expected an integer"):
        Example.from_dict({"id": "d#1", "context": [], "seed": "3"})
