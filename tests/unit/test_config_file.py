"""`rill.toml` -> the model dataclasses: a full file parses, the default comes first, and every
mistake is a ConfigError naming the file, the model (index and name) and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rill.config import EMBEDDED_ID, ModelConfig, UpstreamConfig
from rill.config_file import load_config_file
from rill.errors import ConfigError

FULL = """
default_model = "qwen"

[[models]]
name = "smollm"
path = "embedded"
aliases = ["small"]
fallbacks = ["remote"]
ctx = 2048
parallel = 8
threads = 2
batch_tokens = 256
max_stall = 3

[[models]]
path = "models/tiny.gguf"

[[models]]
name = "remote"
base_url = "http://127.0.0.1:9000/v1"
model = "Qwen/Qwen2.5-7B-Instruct"
api_key_env = "VLLM_KEY"
timeout = 30.5
max_concurrency = 8
retries = 2
aliases = ["qwen"]
fallbacks = ["smollm", "tiny"]
"""


def write(tmp_path: Path, text: str, name: str = "rill.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    return info.value.message


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """A dummy model file: ModelConfig only checks that the file exists."""
    path = tmp_path / "models" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF")
    return path


def test_a_full_file_parses_into_the_dataclasses_default_first(tmp_path, gguf, monkeypatch):
    monkeypatch.setenv("VLLM_KEY", "secret")
    models = load_config_file(write(tmp_path, FULL))
    assert models == (
        UpstreamConfig(name="remote", base_url="http://127.0.0.1:9000/v1", model="Qwen/Qwen2.5-7B-Instruct",
                       api_key_env="VLLM_KEY", timeout=30.5, max_concurrency=8, retries=2, aliases=("qwen",),
                       fallbacks=("smollm", "tiny")),
        ModelConfig(path=None, name="smollm", n_ctx=2048, parallel=8, n_threads=2, n_batch=256, max_stall=3.0,
                    aliases=("small",), fallbacks=("remote",)),
        ModelConfig(path=gguf.resolve()),
    )
    assert [m.id for m in models] == ["remote", "smollm", "tiny"]
    assert isinstance(models[1].max_stall, float) and models[0].api_key() == "secret"


def test_relative_paths_are_relative_to_the_config_files_directory(tmp_path, gguf, monkeypatch):
    monkeypatch.chdir(tmp_path / "models")  # not where the file is
    config = write(tmp_path, '[[models]]\npath = "models/tiny.gguf"\n')
    assert load_config_file(Path("..") / config.name) == (ModelConfig(path=gguf.resolve()),)


def test_defaults_the_embedded_model_and_the_first_model_listed(tmp_path, monkeypatch):
    config = write(tmp_path, '[[models]]\n\n[[models]]\nname = "up"\nbase_url = "https://api.example.com/v1"\n')
    assert load_config_file(config) == (ModelConfig(), UpstreamConfig(name="up", base_url="https://api.example.com/v1"))
    assert load_config_file(config)[0].id == EMBEDDED_ID


def test_default_model_may_name_an_id_or_an_alias(tmp_path):
    text = ('default_model = "{}"\n[[models]]\nname = "a"\n'
            '[[models]]\nname = "b"\nbase_url = "http://b/v1"\naliases = ["bee"]\n'
            '[[models]]\nname = "c"\nbase_url = "http://c/v1"\n')
    for default, ids in [("c", ["c", "a", "b"]), ("bee", ["b", "a", "c"]), ("a", ["a", "b", "c"])]:
        assert [m.id for m in load_config_file(write(tmp_path, text.format(default)))] == ids


@pytest.mark.parametrize("text, expected", [
    ('[[models]]\nctx = "4096"\n', "model #1 ('SmolLM2-135M-Instruct'): ctx must be an integer, got a string '4096'"),
    ('[[models]]\nparallel = true\n', "parallel must be an integer, got a boolean True"),
    ('[[models]]\nmax_stall = false\n', "max_stall must be a number, got a boolean False"),
    ('[[models]]\nctx = 4096.0\n', "ctx must be an integer, got a number 4096.0"),
    ('[[models]]\nname = "x"\naliases = "small"\n', "model #1 ('x'): aliases must be an array of model names"),
    ('[[models]]\nname = "x"\nfallbacks = "other"\n', "model #1 ('x'): fallbacks must be an array of model names"),
    ('[[models]]\nname = "x"\naliases = [1]\n', "aliases must be an array of model names"),
    ('[[models]]\nname = 7\n', "model #1: name must be a string, got an integer 7"),
    ('[[models]]\nname = ""\n', "model #1: name must not be empty"),
    ('[[models]]\npath = 3\n', "model #1: path must be a string"),
    ('[[models]]\nname = "up"\nbase_url = "http://u/v1"\ntimeout = "60"\n',
     "model #1 ('up'): timeout must be a number, got a string '60'"),
    ('[[models]]\nname = "up"\nbase_url = "http://u/v1"\nmax_concurrency = 1.5\n',
     "model #1 ('up'): max_concurrency must be an integer, got a number 1.5"),
    ('[[models]]\nname = "up"\nbase_url = "http://u/v1"\nretries = true\n', "retries must be an integer, got a boolean"),
    ('[[models]]\nname = "up"\nbase_url = 5\n', "model #1 ('up'): base_url must be a string"),
])
def test_a_wrong_type_names_the_model_and_the_key(tmp_path, text, expected):
    config = write(tmp_path, text)
    message = error(config)
    assert message.startswith(f"{config}: model #1") and expected in message, message


@pytest.mark.parametrize("text, expected", [
    ('[[models]]\nname = "a"\ncontext = 4096\n', "model #1 ('a'): unknown key 'context' (the keys: name, path,"),
    ('[[models]]\nname = "a"\ntimeout = 5\n', "model #1 ('a'): unknown key 'timeout' for a local model"),
    ('[[models]]\nname = "u"\nbase_url = "http://u/v1"\nctx = 4096\n',
     "model #1 ('u'): unknown key 'ctx' for an upstream model"),
    ('[[models]]\nname = "u"\nbase_url = "http://u/v1"\npath = "x.gguf"\n', "model #1 ('u'): unknown key 'path' for an upstream model"),
])
def test_an_unknown_model_key_is_named(tmp_path, text, expected):
    config = write(tmp_path, text)
    assert error(config).startswith(f"{config}: {expected}")


def test_an_unknown_top_level_key_is_named(tmp_path):
    config = write(tmp_path, '[[model]]\nname = "a"\n')
    assert error(config) == (f"{config}: unknown top-level key 'model' (the keys: default_model, models, audio, search; models are "
                             "[[models]] tables)")


def test_the_model_index_counts_from_one_in_file_order(tmp_path):
    config = write(tmp_path, '[[models]]\nname = "a"\n[[models]]\nname = "b"\nctx = "big"\n')
    assert error(config).startswith(f"{config}: model #2 ('b'): ctx must be an integer")


def test_an_upstream_model_needs_a_name(tmp_path):
    config = write(tmp_path, '[[models]]\nbase_url = "http://u/v1"\n')
    assert error(config) == f"{config}: model #1: an upstream model needs a name (the id clients send)"


def test_a_toml_syntax_error_gives_the_line_and_column(tmp_path):
    config = write(tmp_path, '[[models]]\nname = "a"\nctx = \n')
    message = error(config)
    assert message.startswith(f"{config}: invalid TOML: ") and "line 3, column" in message, message


def test_a_missing_file(tmp_path):
    assert error(tmp_path / "nope.toml") == f"config file not found: {tmp_path / 'nope.toml'}"


def test_a_directory_is_not_a_config_file(tmp_path):
    assert error(tmp_path).startswith(f"{tmp_path}: cannot read the config file")


@pytest.mark.parametrize("text", ["", 'default_model = "a"\n', "models = []\n"])
def test_no_models(tmp_path, text):
    config = write(tmp_path, text)
    message = error(config)
    assert message == f"{config}: no models: add at least one [[models]] table", message


@pytest.mark.parametrize("text", ['models = "a"\n', "[models]\nname = 'a'\n"])
def test_models_must_be_an_array_of_tables(tmp_path, text):
    config = write(tmp_path, text)
    assert error(config).startswith(f"{config}: models must be an array of tables")


def test_each_model_must_be_a_table(tmp_path):
    config = write(tmp_path, 'models = [{ name = "a" }, "b"]\n')
    assert error(config).startswith(f"{config}: model #2: must be a table")


def test_a_default_model_that_names_nothing(tmp_path):
    config = write(tmp_path, 'default_model = "big"\n[[models]]\nname = "a"\naliases = ["small"]\n')
    assert error(config) == f"{config}: default_model 'big' names no model (the names: a, small)"
    config = write(tmp_path, 'default_model = 1\n[[models]]\nname = "a"\n')
    assert error(config) == f"{config}: default_model must be a string (a model's name or alias), got an integer 1"


def test_an_unset_api_key_env_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("RILL_TEST_UNSET_KEY", raising=False)
    config = write(tmp_path, '[[models]]\nname = "up"\nbase_url = "http://u/v1"\napi_key_env = "RILL_TEST_UNSET_KEY"\n')
    assert error(config) == (f"{config}: model #1 ('up'): the environment variable RILL_TEST_UNSET_KEY "
                             "(api_key_env) is not set")


@pytest.mark.parametrize("text, expected", [
    ('[[models]]\nname = "up"\nbase_url = "ftp://u"\n', "model #1 ('up'): base_url must be an http:// or https:// URL"),
    ('[[models]]\nname = "up"\nbase_url = "http://u/v1"\ntimeout = 0\n', "model #1 ('up'): timeout must be more than 0"),
    ('[[models]]\nname = "a"\nctx = 100\n', "model #1 ('a'): ctx must be at least 256 tokens"),
    ('[[models]]\nname = "a"\nparallel = 32\nbatch_tokens = 16\n',
     "model #1 ('a'): batch_tokens must be at least parallel"),
    ('[[models]]\nname = "a"\nmax_stall = 0.5\n', "model #1 ('a'): max_stall must be between 1 and 100"),
    ('[[models]]\nname = "a"\npath = "missing.gguf"\n', "model #1 ('a'): model file not found: "),
])
def test_the_dataclasses_checks_say_which_model_of_which_file(tmp_path, text, expected):
    config = write(tmp_path, text)
    message = error(config)
    assert message.startswith(f"{config}: {expected}"), message


@pytest.mark.parametrize("text, expected", [
    ('[[models]]\nname = "a"\n[[models]]\nname = "b"\nbase_url = "http://b/v1"\naliases = ["a"]\n',
     "the model name 'a' is used twice (model #1 ('a') and model #2 ('b'))"),
    ('[[models]]\n[[models]]\n', "the model name 'SmolLM2-135M-Instruct' is used twice "
     "(model #1 ('SmolLM2-135M-Instruct') and model #2 ('SmolLM2-135M-Instruct'))"),
    ('[[models]]\nname = "a"\n[[models]]\nname = "b"\nbase_url = "http://b/v1"\nfallbacks = ["a", "c"]\n',
     "model #2 ('b'): fallback 'c' is not a configured model"),
    ('[[models]]\nname = "a"\naliases = ["x"]\nfallbacks = ["x"]\n', "model #1 ('a'): a model cannot be its own fallback"),
])
def test_name_clashes_and_unknown_fallbacks_say_which_model_of_which_file(tmp_path, text, expected):
    config = write(tmp_path, text)
    assert error(config) == f"{config}: {expected}"


def test_a_model_may_run_on_the_torch_backend(tmp_path):
    config = write(tmp_path, '[[models]]\nname = "t"\nbackend = "torch"\ndevice = "cuda:0"\ndtype = "bf16"\n'
                             '[[models]]\nname = "q"\nbackend = "torch"\nweights = "int4"\n')
    model, quantized = load_config_file(config)
    assert (model.backend, model.device, model.dtype) == ("torch", "cuda:0", "bf16")
    assert (quantized.backend, quantized.weights) == ("torch", "int4")


def test_a_backend_setting_that_cannot_work_is_named_as_a_key(tmp_path):
    config = write(tmp_path, '[[models]]\nname = "t"\nbackend = "vllm"\n')
    assert "backend must be one of auto, llamacpp, torch, not 'vllm'" in error(config)


def test_an_upstream_may_serve_other_protocols_itself(tmp_path):
    config = write(tmp_path, '[[models]]\nname = "up"\nbase_url = "http://u/v1"\nsupports = ["responses", "messages"]\n')
    (model,) = load_config_file(config)
    assert model.supports == ("responses", "messages")
    config = write(tmp_path, '[[models]]\nname = "up"\nbase_url = "http://u/v1"\nsupports = ["embeddings"]\n')
    assert error(config) == (f"{config}: model #1 ('up'): supports 'embeddings' is not a protocol Rill can pass "
                             "through (the protocols: responses, messages, completions)")


def test_a_local_model_s_defaults_for_what_requests_leave_out(tmp_path):
    config = write(tmp_path, '[[models]]\nname = "a"\ntemperature = 0.3\nmax_tokens = 512\n')
    (model,) = load_config_file(config)
    assert (model.temperature, model.max_tokens) == (0.3, 512)
    config = write(tmp_path, '[[models]]\nname = "a"\ntemperature = 3\n')
    assert error(config) == f"{config}: model #1 ('a'): temperature must be between 0 and 2"


def test_an_upstream_with_several_replicas(tmp_path, monkeypatch):
    monkeypatch.setenv("B_KEY", "secret-b")
    config = write(tmp_path, '[[models]]\nname = "up"\nbase_urls = ["http://a:8000/v1", "http://b:8000/v1"]\n'
                             'routing = "least_busy"\nhealth_path = "/health"\neject_after = 5\n')
    (model,) = load_config_file(config)
    assert [r.url for r in model.endpoints] == ["http://a:8000/v1", "http://b:8000/v1"]
    assert (model.routing, model.health_path, model.eject_after) == ("least_busy", "/health", 5)
    config = write(tmp_path, '[[models]]\nname = "up"\nreplicas = [{url = "http://a/v1"}, '
                             '{url = "http://b/v1", weight = 2, api_key_env = "B_KEY"}]\n')
    (model,) = load_config_file(config)
    assert [(r.url, r.weight, r.api_key_env) for r in model.endpoints] == [
        ("http://a/v1", 1.0, None), ("http://b/v1", 2.0, "B_KEY")]
    assert model.for_replica(model.endpoints[1]).api_key() == "secret-b"


@pytest.mark.parametrize("body, message", [
    ('base_url = "http://a/v1"\nbase_urls = ["http://b/v1"]',
     "give its server as exactly one of base_url, base_urls (several replicas) or replicas (several, each with a "
     "weight or key), not base_url and base_urls"),
    ('base_urls = []', "base_urls must be an array of URLs"),
    ('base_urls = ["http://a/v1", "http://a/v1/"]', "a replica is listed twice"),
    ('base_urls = ["http://a/v1", "ftp://b"]', "a replica's URL must be an http:// or https:// URL, got 'ftp://b'"),
    ('base_urls = ["http://a/v1"]\nrouting = "random"', "routing must be one of prefix, round_robin, least_busy"),
    ('replicas = [{url = "http://a/v1", wieght = 2}]', "replicas must be tables of the keys url, weight, "
     "api_key_env (replica #1 has 'wieght')"),
    ('replicas = [{url = "http://a/v1", weight = 0}]', "replica http://a/v1: weight must be more than 0"),
    ('replicas = [{url = "http://a/v1", api_key_env = "NOPE_NOT_SET"}]',
     "the environment variable NOPE_NOT_SET (api_key_env) is not set"),
    ('base_urls = ["http://a/v1"]\ncache_threshold = 1.5', "cache_threshold must be between 0 and 1"),
    ('base_urls = ["http://a/v1"]\nbalance_rel_threshold = 0.5', "balance_rel_threshold at least 1"),
])
def test_replica_settings_that_cannot_work_are_refused(tmp_path, body, message):
    config = write(tmp_path, f'[[models]]\nname = "up"\n{body}\n')
    assert message in error(config)
