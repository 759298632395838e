"""The model's own chat template (from its GGUF metadata), rendered in a sandboxed Jinja
environment the way Hugging Face's `apply_chat_template` does."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Used when a model file carries no template: ChatML, which most small chat models speak.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# Stand-ins for message text while rendering (Unicode private-use characters).
_MARK = "\ue000{}\ue001"
_MARK_RE = re.compile("\ue000(\\d+)\ue001")
# A message's texts that come from the client: never parsed for control tokens
_MESSAGE_TEXTS = ("content", "reasoning_content")


_THINKING_MARKS = ("<think>", "enable_thinking", "reasoning_content")


class TemplateError(ValueError):
    """The template refused the conversation (raise_exception) or failed to render it."""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    __slots__ = ("source", "bos_token", "eos_token", "knows_developer_role", "has_thinking", "knows_tools",
                 "switches_thinking", "_template")

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = ""):
        self.source = source or CHATML
        self.bos_token = bos_token
        self.eos_token = eos_token
        # Templates written before OpenAI's `developer` role get it as `system`.
        self.knows_developer_role = "developer" in self.source
        # A template with a thinking section belongs to a reasoning model (Qwen3, DeepSeek-R1, ...).
        self.has_thinking = any(mark in self.source for mark in _THINKING_MARKS)
        # Qwen3's switch: rendered with enable_thinking=false, the prompt holds an empty section
        self.switches_thinking = "enable_thinking" in self.source
        # A template that renders `tools` and writes calls as <tool_call> speaks Rill's tool
        # format (Hermes/Qwen); any other gets the tools in the system prompt (api/core/messages.py).
        self.knows_tools = "tools" in self.source and "<tool_call>" in self.source
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"the model's chat template does not parse: {exc}") from exc

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
               tools: list[dict[str, Any]] | None = None, enable_thinking: bool | None = None) -> str:
        """Render messages ({role, content: str, ...}) into the prompt text; `tools` (OpenAI's
        shape) only for a template that knows_tools; `enable_thinking` for one that
        switches_thinking."""
        if not self.knows_developer_role:
            messages = [{**m, "role": "system"} if m["role"] == "developer" else m for m in messages]
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **({"tools": tools} if tools else {}),
                **({"enable_thinking": enable_thinking} if enable_thinking is not None else {}),
            )
        except TemplateError:
            raise
        except jinja2.TemplateError as exc:  # includes sandbox SecurityError
            raise TemplateError(f"the model's chat template failed on these messages: {exc}") from exc
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise TemplateError(f"the model's chat template failed on these messages: {exc}") from exc

    def render_parts(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True,
                     tools: list[dict[str, Any]] | None = None,
                     enable_thinking: bool | None = None) -> list[tuple[str, bool]]:
        """The prompt as (text, is_message_text) parts, whose concatenation is render(messages).

        Message text is tokenized without special-token parsing, so a user who types
        `<|im_end|>` cannot close their turn and forge another role's. The template is rendered
        once more with stand-ins for the message texts to find where they sit; a template that
        rewrites or inspects content (the stand-in render then differs) gets one part, as is."""
        prompt = self.render(messages, add_generation_prompt=add_generation_prompt, tools=tools,
                             enable_thinking=enable_thinking)
        texts: list[str] = []
        marked: list[dict[str, Any]] = []
        for message in messages:
            m = dict(message)
            for name in _MESSAGE_TEXTS:
                if isinstance(m.get(name), str) and m[name]:
                    m[name] = _MARK.format(len(texts))
                    texts.append(message[name])
            marked.append(m)
        try:
            skeleton = self.render(marked, add_generation_prompt=add_generation_prompt, tools=tools,
                                   enable_thinking=enable_thinking)
        except TemplateError:
            return [(prompt, False)]
        parts: list[tuple[str, bool]] = []
        pos = 0
        for match in _MARK_RE.finditer(skeleton):
            parts.append((skeleton[pos : match.start()], False))
            parts.append((texts[int(match.group(1))], True))
            pos = match.end()
        parts.append((skeleton[pos:], False))
        if "".join(text for text, _ in parts) != prompt:
            return [(prompt, False)]
        return [part for part in parts if part[0]]
