"""`hf:ORG/REPO[@REVISION][:QUANT or :FILE]` parsed, and bad specs refused naming the form."""

from __future__ import annotations

import pytest

from rill.errors import ConfigError
from rill.hub.spec import HubSpec, is_hub_spec, parse_spec


@pytest.mark.parametrize("text, spec", [
    ("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF", HubSpec("Qwen/Qwen2.5-0.5B-Instruct-GGUF")),
    ("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M", HubSpec("Qwen/Qwen2.5-0.5B-Instruct-GGUF", None, "Q4_K_M")),
    ("hf:org/repo:sub/model-q8_0.gguf", HubSpec("org/repo", None, "sub/model-q8_0.gguf")),
    ("hf:org/repo@v1.0:Q8_0", HubSpec("org/repo", "v1.0", "Q8_0")),
    ("hf:org/repo@refs/pr/3", HubSpec("org/repo", "refs/pr/3")),
    ("hf:org/repo@" + "a" * 40 + ":UD-Q4_K_XL", HubSpec("org/repo", "a" * 40, "UD-Q4_K_XL")),
])
def test_specs_parse_into_repo_revision_and_selector(text, spec):
    parsed = parse_spec(text)
    assert parsed == spec
    assert str(parsed) == text  # printed back as written, in error messages and logs
    assert parsed.repo_name == spec.repo_id.split("/")[1]


def test_a_selector_ending_in_gguf_names_a_file_and_any_other_a_quantization():
    assert parse_spec("hf:a/b:Model.Q4_K_M.GGUF").names_file
    assert not parse_spec("hf:a/b:Q4_K_M").names_file
    assert not parse_spec("hf:a/b").names_file


@pytest.mark.parametrize("text, problem", [
    ("hf:", "not a repository id"),
    ("hf:repo-without-org", "not a repository id"),
    ("hf:a/b/c", "not a repository id"),
    ("hf:org/re po", "not a repository id"),
    ("hf:org/-repo", "not a repository id"),
    ("hf:org/re--po", "not a repository id"),
    ("hf:org/repo:", "not a quantization name or a file"),
    ("hf:org/repo:../x.gguf", "not a quantization name or a file"),
    ("hf:org/repo:/abs.gguf", "not a quantization name or a file"),
    ("hf:org/repo@:Q4_K_M", "not a revision"),
    ("hf:org/repo@a..b", "not a revision"),
])
def test_bad_specs_are_config_errors_naming_the_form(text, problem):
    with pytest.raises(ConfigError) as caught:
        parse_spec(text)
    assert problem in caught.value.message
    assert "hf:ORG/REPO[@REVISION][:QUANT or :FILE.gguf]" in caught.value.message


def test_only_the_hf_prefix_makes_a_hub_spec():
    assert is_hub_spec("hf:a/b")
    assert not is_hub_spec("./hf:a/b") and not is_hub_spec("models/x.gguf") and not is_hub_spec(None)
    with pytest.raises(ConfigError, match="is not a Hub model"):
        parse_spec("/models/x.gguf")
