"""rill.sampling.template: sandboxed rendering of the model's chat template."""

from __future__ import annotations

import jinja2
import pytest

from rill.sampling.template import CHATML, ChatTemplate, TemplateError

# SmolLM2-Instruct's template: ChatML with a default system prompt when none is given.
SMOLLM2 = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"

USER = {"role": "user", "content": "hi"}


def test_default_is_chatml_with_a_generation_prompt():
    messages = [{"role": "system", "content": "Be brief."}, USER]
    expected = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    assert ChatTemplate(None).render(messages) == expected + "<|im_start|>assistant\n"
    assert ChatTemplate("").render(messages, add_generation_prompt=False) == expected
    assert ChatTemplate(None).source == CHATML


def test_smollm2_template_adds_its_default_system_prompt_only_when_none_is_given():
    template = ChatTemplate(SMOLLM2)
    assert template.render([USER]) == SMOL_SYSTEM + "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    own = template.render([{"role": "system", "content": "S"}, USER], add_generation_prompt=False)
    assert own == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"


def test_developer_becomes_system_when_the_template_does_not_know_it():
    messages = [{"role": "developer", "content": "rules"}, USER]
    rendered = ChatTemplate(SMOLLM2).render(messages)
    assert rendered.startswith("<|im_start|>system\nrules<|im_end|>\n")
    assert "SmolLM" not in rendered  # it counts as the system prompt
    assert "developer" not in rendered
    assert messages[0]["role"] == "developer"  # the caller's messages are not modified


def test_developer_stays_when_the_template_handles_it():
    source = "{% for m in messages %}{% if m.role == 'developer' %}DEV:{% endif %}{{ m.role }}={{ m.content }};{% endfor %}"
    template = ChatTemplate(source)
    assert template.knows_developer_role
    assert template.render([{"role": "developer", "content": "rules"}, USER]) == "DEV:developer=rules;user=hi;"


def test_raise_exception_raises_template_error_with_its_message():
    source = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('Conversation must start with system') }}{% endif %}ok"
    template = ChatTemplate(source)
    with pytest.raises(TemplateError) as info:
        template.render([USER])
    assert str(info.value) == "Conversation must start with system"
    assert template.render([{"role": "system", "content": "s"}]) == "ok"


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages[0].__class__.__init__.__globals__ }}",
        "{{ messages.append(1) }}",  # immutable sandbox: no mutating methods
        "{{ messages[0].update({'role': 'system'}) }}",
    ],
)
def test_sandbox_blocks_unsafe_access_with_a_template_error(source):
    with pytest.raises(TemplateError) as info:
        ChatTemplate(source).render([USER])
    assert not isinstance(info.value, jinja2.TemplateError)


def test_a_single_unsafe_attribute_renders_as_nothing():
    assert ChatTemplate("[{{ ''.__class__ }}][{{ messages.__class__ }}]").render([USER]) == "[][]"


@pytest.mark.parametrize("source", ["{% for m in %}", "{% if true %}unclosed", "{{ messages[ }}", "{% endfor %}"])
def test_syntax_error_raises_template_error_at_load(source):
    with pytest.raises(TemplateError, match="does not parse"):
        ChatTemplate(source)


@pytest.mark.parametrize("source", ["{{ messages[0].missing.deeper }}", "{{ undefined_thing.x }}", "{{ messages[5]['role'] }}",
                                    "{{ 1 + messages }}"])
def test_render_failures_become_template_errors(source):
    with pytest.raises(TemplateError, match="failed on these messages"):
        ChatTemplate(source).render([USER])


def test_tojson_keeps_non_ascii_and_supports_indent():
    content = 'héllo 😀 "quoted" <b>'
    assert ChatTemplate("{{ messages[0]['content'] | tojson }}").render([{"role": "user", "content": content}]) == (
        '"héllo 😀 \\"quoted\\" <b>"')
    assert ChatTemplate("{{ messages[0] | tojson(indent=2) }}").render([USER]) == (
        '{\n  "role": "user",\n  "content": "hi"\n}')


def test_bos_and_eos_tokens_are_available():
    template = ChatTemplate("{{ bos_token }}{{ messages[0].content }}{{ eos_token }}", bos_token="<s>", eos_token="</s>")
    assert template.render([USER]) == "<s>hi</s>"


def test_loop_controls_and_hf_whitespace_rules():
    source = "{% for m in messages %}\n  {% if loop.index > 2 %}{% break %}{% endif %}\n{{ m.content }}\n{% endfor %}"
    messages = [{"role": "user", "content": c} for c in "abc"]
    assert ChatTemplate(source).render(messages) == "a\nb\n"


def test_strftime_now_is_available():
    year = ChatTemplate("{{ strftime_now('%Y') }}").render([USER])
    assert len(year) == 4 and year.isdigit()
