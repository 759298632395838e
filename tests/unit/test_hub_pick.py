"""Which files of a repository listing a spec means: one GGUF, a split GGUF's shards, or the
safetensors folder; several matches or none are errors that list what the repository has."""

from __future__ import annotations

import pytest

from rill.errors import ConfigError
from rill.hub.pick import candidates, has_quant, pick
from rill.hub.spec import parse_spec

MB = 1_000_000
QUANTS = {
    "README.md": 100, ".gitattributes": 10,
    "Smol-135M-Q4_K_M.gguf": 105 * MB, "Smol-135M-Q4_K_S.gguf": 102 * MB, "Smol-135M-Q8_0.gguf": 145 * MB,
    "mmproj-Smol-135M-F16.gguf": 20 * MB,
    "Q6_K/Smol-135M-Q6_K-00001-of-00002.gguf": 60 * MB, "Q6_K/Smol-135M-Q6_K-00002-of-00002.gguf": 50 * MB,
}
FOLDER = {
    "README.md": 1, "config.json": 700, "generation_config.json": 100, "tokenizer.json": 2 * MB,
    "tokenizer_config.json": 4000, "chat_template.jinja": 900, "merges.txt": 400_000,
    "model-00001-of-00002.safetensors": 5 * MB, "model-00002-of-00002.safetensors": 3 * MB,
    "model.safetensors.index.json": 20_000, "consolidated.safetensors": 8 * MB,
    "onnx/model.onnx": 9 * MB, "onnx/config.json": 700, "pytorch_model.bin": 8 * MB,
}


def picked(text: str, files: dict[str, int | None]) -> tuple[str, ...]:
    return pick(parse_spec(text), files).files


def error(text: str, files: dict[str, int | None]) -> str:
    with pytest.raises(ConfigError) as caught:
        pick(parse_spec(text), files)
    return caught.value.message


def test_a_repo_with_one_gguf_serves_it_without_a_selector():
    files = {"README.md": 1, "Smol.Q4_1.gguf": 98 * MB, "mmproj-Smol-f16.gguf": MB}  # a projector is no model
    chosen = pick(parse_spec("hf:a/b"), files)
    assert chosen.files == ("Smol.Q4_1.gguf",) and chosen.kind == "gguf" and chosen.name == "Smol.Q4_1"


def test_several_ggufs_without_a_selector_list_each_with_its_size():
    message = error("hf:a/quants", QUANTS)
    assert message.startswith("hf:a/quants: 4 models in the repository; name one with :QUANT or :FILE")
    for line in ("Smol-135M-Q4_K_M.gguf, 105.0 MB", "Smol-135M-Q4_K_S.gguf, 102.0 MB",
                 "Smol-135M-Q8_0.gguf, 145.0 MB", "Q6_K/Smol-135M-Q6_K-00001-of-00002.gguf (+1 more shards), 110.0 MB"):
        assert f"\n  {line}" in message
    assert "mmproj" not in message and "e.g. hf:a/quants:Q6_K/Smol-135M-Q6_K-00001-of-00002.gguf" in message


@pytest.mark.parametrize("quant, file", [
    ("Q4_K_M", "Smol-135M-Q4_K_M.gguf"), ("q4_k_m", "Smol-135M-Q4_K_M.gguf"), ("Q8_0", "Smol-135M-Q8_0.gguf"),
    ("135M-Q4_K_S", "Smol-135M-Q4_K_S.gguf"),  # several tokens in a row
])
def test_a_quantization_picks_the_file_that_names_it_case_insensitively(quant, file):
    assert picked(f"hf:a/b:{quant}", QUANTS) == (file,)


def test_a_quantization_is_a_whole_token_so_q4_k_matches_neither_q4_k_m_nor_q4_k_s():
    message = error("hf:a/b:Q4_K", QUANTS)
    assert message.startswith("hf:a/b:Q4_K: no model in the repository matches 'Q4_K'; it has:\n")
    assert "Smol-135M-Q4_K_M.gguf" in message and "Smol-135M-Q4_K_S.gguf" in message
    assert not has_quant("model-Q4_K_M.gguf", "Q4") and not has_quant("model-IQ4_XS.gguf", "Q4_XS")
    assert has_quant("model.Q4_K_M.gguf", "Q4_K_M") and has_quant("Q4_K_M/model-00001-of-00002.gguf", "Q4_K_M")
    assert has_quant("Qwen3-0.6B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL")


def test_a_quantization_two_files_share_is_ambiguous():
    files = {"a-Q8_0.gguf": MB, "b-Q8_0.gguf": 2 * MB}
    message = error("hf:x/y:Q8_0", files)
    assert "2 models match 'Q8_0'" in message and "a-Q8_0.gguf, 1.0 MB" in message and "b-Q8_0.gguf, 2.0 MB" in message


def test_a_split_gguf_is_downloaded_as_its_set_of_shards_and_named_without_the_shard_suffix():
    chosen = pick(parse_spec("hf:a/b:Q6_K"), QUANTS)
    assert chosen.files == ("Q6_K/Smol-135M-Q6_K-00001-of-00002.gguf", "Q6_K/Smol-135M-Q6_K-00002-of-00002.gguf")
    assert chosen.name == "Smol-135M-Q6_K" and chosen.size == 110 * MB
    # any shard's name selects the set
    assert picked("hf:a/b:Smol-135M-Q6_K-00002-of-00002.gguf", QUANTS) == chosen.files


def test_a_split_gguf_missing_a_shard_is_refused():
    files = {"m-Q2_K-00001-of-00003.gguf": MB, "m-Q2_K-00003-of-00003.gguf": MB}
    assert "lacks shards" in error("hf:a/b:Q2_K", files)


def test_a_file_selector_is_exact_by_path_or_by_name():
    assert picked("hf:a/b:Smol-135M-Q8_0.gguf", QUANTS) == ("Smol-135M-Q8_0.gguf",)
    assert picked("hf:a/b:mmproj-Smol-135M-F16.gguf", QUANTS) == ("mmproj-Smol-135M-F16.gguf",)  # as asked
    message = error("hf:a/b:Smol-135M-Q5_K_M.gguf", QUANTS)
    assert "matches 'Smol-135M-Q5_K_M.gguf'; it has:" in message and "Smol-135M-Q8_0.gguf" in message


def test_a_safetensors_repo_is_its_top_level_config_tokenizer_and_weights():
    chosen = pick(parse_spec("hf:org/Model-1B"), FOLDER)
    assert chosen.kind == "safetensors"
    assert set(chosen.files) == {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                 "chat_template.jinja", "model.safetensors.index.json",
                                 "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert chosen.size == sum(FOLDER[f] for f in chosen.files)


def test_a_repo_with_ggufs_and_safetensors_asks_which_and_safetensors_selects_the_folder():
    both = {**FOLDER, "Model-1B-Q4_K_M.gguf": MB}
    message = error("hf:org/Model-1B", both)
    assert "2 models in the repository" in message and "the safetensors model" in message
    assert pick(parse_spec("hf:org/Model-1B:safetensors"), both).kind == "safetensors"
    assert picked("hf:org/Model-1B:Q4_K_M", both) == ("Model-1B-Q4_K_M.gguf",)


def test_a_repo_without_a_model_says_what_it_has():
    message = error("hf:org/data", {"README.md": 1, "pytorch_model.bin": 5, "config.json": 1})
    assert "holds no model Rill serves" in message and "pytorch_model.bin" in message


def test_unknown_sizes_are_left_out_of_labels():
    (c,) = candidates({"x.gguf": None})
    assert c.size is None and c.label == "x.gguf"
