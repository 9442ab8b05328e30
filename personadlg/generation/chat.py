"""A chat session with a trained model: history, persona, attribute targets, user id.

The CLI reads lines and prints replies; the session turns each user message into an example
(the history so far as context) and asks the method for one response.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from personadlg.config import GenerateConfig
from personadlg.data.attributes import format_pairs, parse_pairs, parse_targets
from personadlg.data.schema import Example, Message
from personadlg.generation.inputs import check_targets, example_seed
from personadlg.models.base import as_generations, hook
from personadlg.models.surface import ChatCommand

HELP = """commands:
  /reset                      forget the conversation (persona and attributes stay)
  /persona                    show the persona
  /persona SENTENCE           add a persona sentence
  /persona clear              remove every persona sentence
  /attributes                 show the target attributes
  /attributes a=x,b=y         set target attributes
  /attributes clear           no target attributes
  /user ID                    speak as user ID (lora: the user's adapter and profile)
  /profile                    show the profile
  /profile age=20s,gender=f   set the profile (profile-aware methods)
  /profile clear              no profile
  /help                       this text
  /quit                       leave (or end of input)"""
"""The commands every chat has; a method adds its own (`MethodSpec.chat_commands`)."""


def parse_profile(text: str) -> dict[str, str]:
    """`age=20s,gender=female` → {"age": "20s", "gender": "female"}."""
    return parse_pairs(text, option="--profile", shape="key=value[,key=value...]")


@dataclass
class ChatSession:
    """Conversation state and one method's model."""

    model: Any
    decoding: GenerateConfig
    method: str
    supports: tuple[str, ...]
    attribute_space: dict[str, list[str]] = field(default_factory=dict)
    history: list[Message] = field(default_factory=list)
    persona: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    user_id: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    turn: int = 0
    last_info: dict[str, Any] = field(default_factory=dict)
    """What the method recorded about the last reply (e.g. cvae's ODE settings and NFE)."""
    last_record: dict[str, Any] = field(default_factory=dict)
    """What the method recorded for the last reply's example alone (codebook: its codes)."""
    method_commands: Mapping[str, ChatCommand] = field(default_factory=dict)
    """The method's own /commands (its spec's `chat_commands`)."""

    def help_text(self) -> str:
        """HELP, with the method's own commands before /help."""
        head, _, tail = HELP.partition("\n  /help")
        extra = [
            f"  {(c.usage or '/' + name):<28}{c.help} ({self.method})"
            for name, c in self.method_commands.items()
        ]
        return "\n".join([head, *extra]) + "\n  /help" + tail

    def reply(self, text: str) -> str:
        """Add the user's message, generate the assistant's reply, add it to the history, return it."""
        self.history.append(Message("user", text))
        self.turn += 1
        ex = Example(
            id=f"chat#{self.turn}",
            dialogue_id="chat",
            context=list(self.history),
            persona=list(self.persona),
            attributes=dict(self.attributes),
            user_id=self.user_id,
            profile=dict(self.profile),
        )
        target = dict(self.attributes) or None
        seed = example_seed(self.decoding.seed, ex.id, target)
        try:
            result = self.model.generate(
                [ex], decoding=self.decoding, seeds=[seed], targets=[target]
            )
        except BaseException:  # not answered: the message is not part of the conversation
            self.history.pop()
            self.turn -= 1
            raise
        (answer,) = as_generations(result).texts
        gens = as_generations(result)
        self.last_info = gens.shared
        self.last_record = dict(gens.records[0] or {}) if gens.records else {}
        self.history.append(Message("assistant", answer))
        return answer

    def set_user(self, user_id: str | None) -> str:
        """Speak as USER_ID; a user the model knows brings their profile (unless one is set)."""
        self.user_id = user_id
        if user_id is None:
            return "(user: none)"
        known = hook(self.model, "known_user")
        if known is None:
            if "user" in self.supports:
                return f"(user: {user_id})"
            return f"(user: {user_id}) (note: this {self.method} model does not use the user id)"
        entry = known(user_id)
        if entry is None:
            return f"(user: {user_id}; no adapter for this user: the base model answers)"
        if entry.get("profile") and not self.profile:
            self.profile = dict(entry["profile"])
        shown = format_pairs(self.profile) or "none"
        return f"(user: {user_id}, adapter {entry.get('dir', user_id)}; profile: {shown})"

    def command(self, line: str) -> str:
        """Run a /command; return what to show the user."""
        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        if name == "help":
            return self.help_text()
        if name in self.method_commands:
            return self.method_commands[name].run(self, arg)
        if name == "reset":
            self.history.clear()
            return "(conversation reset)"
        if name == "persona":
            if not arg:
                return "persona: " + (" ".join(self.persona) or "(none)")
            if arg == "clear":
                self.persona.clear()
                return "(persona cleared)"
            self.persona.append(arg)
            note = (
                ""
                if "persona" in self.supports
                else f" (note: this {self.method} model does not use the persona)"
            )
            return f"(persona: {' '.join(self.persona)}){note}"
        if name == "attributes":
            if not arg:
                return "attributes: " + (format_pairs(self.attributes) or "(none)")
            if arg == "clear":
                self.attributes.clear()
                return "(attributes cleared)"
            targets = parse_targets(arg)
            check_targets(targets, self.attribute_space)
            self.attributes = targets
            note = (
                ""
                if "attributes" in self.supports
                else f" (note: this {self.method} model does not use attributes)"
            )
            return f"(attributes: {arg}){note}"
        if name == "user":
            return self.set_user(arg or None)
        if name == "profile":
            if not arg:
                return "profile: " + (format_pairs(self.profile) or "(none)")
            if arg == "clear":
                self.profile.clear()
                return "(profile cleared)"
            self.profile = parse_profile(arg)
            note = (
                ""
                if "profile" in self.supports
                else f" (note: this {self.method} model does not use the profile)"
            )
            return f"(profile: {arg}){note}"
        return f"unknown command /{name}; /help lists the commands"
