"""The profile renderer: `[key: value]` pairs in a fixed key order, the same text for training,
generation and chat (it is the render header)."""

from __future__ import annotations

import pytest

from personadlg.config import load_recipe
from personadlg.data.schema import Example, Message
from personadlg.errors import ConfigError
from personadlg.models.profile_prompt import ProfileTemplate, profile_items, render_profile
from personadlg.models.render import RenderOptions, header_lines, plain_prompt

PROFILE = {"occupation": "nurse", "gender": "female", "age": "20s", "hobbies": ["chess", "tea"]}


def test_default_pairs_in_key_order_then_sorted() -> None:
    t = ProfileTemplate(keys=("age", "gender"))
    assert render_profile(PROFILE, template=t) == (
        "[age: 20s] [gender: female] [hobbies: chess, tea] [occupation: nurse]"
    )
    # no listed keys: sorted; the dict's own order does not matter
    shuffled = dict(reversed(list(PROFILE.items())))
    assert render_profile(shuffled) == render_profile(PROFILE)
    assert render_profile(PROFILE).startswith("[age: 20s] [gender: female]")


def test_empty_values_and_empty_profile_render_nothing() -> None:
    assert render_profile({}) == ""
    assert render_profile(None) == ""
    assert render_profile({"age": "", "job": None, "tags": []}) == ""
    assert render_profile({"age": " 30s \n", "job": None}) == "[age: 30s]"


def test_only_keys_persona_and_custom_format() -> None:
    t = ProfileTemplate(keys=("gender", "age"), only_keys=True)
    assert render_profile(PROFILE, template=t) == "[gender: female] [age: 20s]"
    t = ProfileTemplate(
        item="<{key}={value}>", separator="", keys=("age",), only_keys=True, persona=True
    )
    persona = ["i keep bees.", "  i sell honey. "]
    assert (
        render_profile(PROFILE, persona, template=t)
        == "<age=20s><persona=i keep bees. i sell honey.>"
    )
    assert profile_items({}, persona, template=t) == [("persona", "i keep bees. i sell honey.")]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"item": "[{key}]"}, "exactly the fields"),
        ({"item": "[{key}: {value} {other}]"}, "exactly the fields"),
        ({"item": "[{key: {value}]"}, "not a format string"),
        ({"keys": ("age", "age")}, "twice"),
        ({"only_keys": True}, "needs model.profile_template.keys"),
    ],
)
def test_bad_templates_are_config_errors(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        ProfileTemplate(**kwargs)


def _example(profile: dict, persona: list[str] | None = None) -> Example:
    return Example(
        id="d1#1",
        dialogue_id="d1",
        context=[Message("user", "hi there")],
        profile=profile,
        persona=persona or [],
    )


def test_render_header_uses_the_template_and_drops_empty_profiles() -> None:
    t = ProfileTemplate(keys=("age", "gender"), only_keys=True)
    opts = RenderOptions(profile=True, profile_template=t)
    assert header_lines(_example(PROFILE), opts) == ["[age: 20s] [gender: female]"]
    assert header_lines(_example({}), opts) == []
    assert plain_prompt(header_lines(_example({}), opts), _example({}).context) == (
        "User: hi there\nAssistant:"
    )
    # the template can take the persona over: no separate "Persona:" line
    both = RenderOptions(persona=True, profile=True, profile_template=ProfileTemplate(persona=True))
    assert header_lines(_example({"age": "20s"}, ["i keep bees."]), both) == [
        "[age: 20s] [persona: i keep bees.]"
    ]
    # without a template: the documented "Profile:" line, unchanged
    assert header_lines(_example({"age": "20s"}), RenderOptions(profile=True)) == [
        "Profile: age: 20s"
    ]
    # profile off: the template is not used
    assert header_lines(_example(PROFILE), RenderOptions(profile_template=t)) == []


def test_recipe_override_reaches_the_template() -> None:
    cfg = load_recipe(
        "finetune/tiny",
        [
            "model.profile_in_prompt=true",
            "model.profile_template={keys: [age, gender], only_keys: true}",
        ],
    )
    t = cfg.model.profile_template
    assert isinstance(t, ProfileTemplate) and t.keys == ("age", "gender") and t.only_keys
    assert load_recipe("finetune/tiny").model.profile_template is None
    with pytest.raises(ConfigError, match="exactly the fields"):
        load_recipe("finetune/tiny", ["model.profile_template={item: '[{key}]'}"])
