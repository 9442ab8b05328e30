"""The synth and profile-infer tests' server: the fake OpenAI-compatible API with its default replies."""

from __future__ import annotations

import pytest

from tests.fake_openai import FakeOpenAI


@pytest.fixture
def server(fake_openai) -> FakeOpenAI:
    """A fake API answering synth prompts with a valid dialogue (faults through its `script`,
    `fault_for`, `content_for`)."""
    return fake_openai()
