"""`rill pull` and `rill models` as a user runs them: subprocesses with HF_ENDPOINT on the loopback
Hub and HF_HOME in a temporary folder. The progress bar on a terminal (a pseudo-terminal here), an
interrupted pull resumed by the next, offline reuse with no request, and the errors' exit codes."""

from __future__ import annotations

import fcntl
import hashlib
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from rill.cli import embedded_model_path, main
from rill.config_file import load_config_file
from tests.hub_server import HubServer, fake_bytes, write_repo

RILL = Path(sys.executable).parent / "rill"
MB = 1_000_000
TIMEOUT_S = 120  # a bound on one command, not a speed assertion


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub-repos")
    return {
        "test/smol-gguf": write_repo(root / "smol", {"SmolLM2-135M-Instruct.Q4_1.gguf": embedded_model_path()}),
        "test/quants": write_repo(root / "quants", {"Tiny-Q4_K_M.gguf": fake_bytes(MB, 1),
                                                    "Tiny-Q8_0.gguf": fake_bytes(2 * MB, 2)}),
    }


@pytest.fixture
def hub(repos):
    with HubServer(repos) as server:
        yield server


def hub_env(hub: HubServer, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a user of this Hub, with their own cache; none of the caller's HF_ or RILL_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "RILL_"))}
    return {**env, "HF_HOME": str(home), "HF_ENDPOINT": hub.url, **extra}


def pull(spec: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(RILL), "pull", spec], env=env, capture_output=True, text=True, timeout=TIMEOUT_S,
                          stdin=subprocess.DEVNULL)


def on_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run args with stderr on a 100-column pseudo-terminal, as in a terminal: (exit code, stdout,
    what the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    shown = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave) as proc:
            os.close(slave)
            slave = -1
            out, _ = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if slave >= 0:
            os.close(slave)
        reader.join(TIMEOUT_S)
        os.close(master)
    return proc.returncode, out.decode(), shown.decode(errors="replace")


def test_rill_pull_shows_a_progress_bar_on_a_terminal_and_prints_the_path(hub, tmp_path):
    rc, out, terminal = on_terminal([str(RILL), "pull", "hf:test/quants:Q8_0"], hub_env(hub, tmp_path / "hf"))
    assert rc == 0, terminal
    path = Path(out.strip())
    assert out == f"{path}\n" and path.read_bytes() == fake_bytes(2 * MB, 2)
    assert path.is_relative_to(tmp_path / "hf" / "hub" / "models--test--quants" / "snapshots")
    assert re.search(r"Tiny-Q8_0\.gguf: +100%\|.*\| 2\.00M/2\.00M", terminal), terminal  # tqdm's bar, at its end
    assert f"cached in {tmp_path / 'hf' / 'hub'}" in terminal and "downloading Tiny-Q8_0.gguf" in terminal


def test_ctrl_c_stops_a_pull_at_once_and_the_next_pull_completes_the_file(hub, tmp_path):
    """The download runs on the main thread (snapshot_download's pool would finish the file first).
    huggingface_hub 2 writes each download to a temporary file of its own process and deletes it on
    failure, so the next pull fetches that file from its start (a connection cut within one pull
    resumes: test_hub_download)."""
    env = hub_env(hub, tmp_path / "hf")
    blobs = tmp_path / "hf" / "hub" / "models--test--smol-gguf" / "blobs"
    hub.stall_after = 35 * MB
    with subprocess.Popen([str(RILL), "pull", "hf:test/smol-gguf"], env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert hub.stalled.wait(TIMEOUT_S), "the download never reached the stall"
        deadline = time.monotonic() + TIMEOUT_S
        while not (partial := [p.stat().st_size for p in blobs.glob("*.incomplete")]) or partial[0] < 30 * MB:
            assert time.monotonic() < deadline, f"the partial blob stayed at {partial}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)  # Ctrl-C, while the Hub still holds the connection open
        out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 130 and out == "", err
    assert "rill pull: interrupted; the files it finished stay in the cache, run it again for the rest" in err
    assert "Traceback" not in err
    hub.release.set()
    done = pull("hf:test/smol-gguf", env)
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(embedded_model_path().read_bytes()).digest()
    assert not list(blobs.glob("*.incomplete"))


def test_offline_pull_makes_no_request_and_rill_models_lists_the_cache(hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf")
    first = pull("hf:test/quants:Q4_K_M", env)
    assert first.returncode == 0, first.stderr
    before = len(hub.requests)
    offline = pull("hf:test/quants:Q4_K_M", {**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and offline.stdout == first.stdout, offline.stderr
    assert "HF_HUB_OFFLINE is set; using the cached" in offline.stderr
    assert len(hub.requests) == before  # not one request while offline
    listed = subprocess.run([str(RILL), "models"], env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                            text=True, timeout=TIMEOUT_S)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["MODEL", "KIND", "SIZE", "REVISION"]
    assert row.split() == ["hf:test/quants:Tiny-Q4_K_M.gguf", "gguf", "1.0", "MB", "main"]
    assert listed.stderr == f"1 cached model in {tmp_path / 'hf' / 'hub'}\n"
    assert len(hub.requests) == before


def test_pull_errors_exit_2_with_the_reason(hub, tmp_path):
    env = hub_env(hub, tmp_path / "hf")
    bad = pull("hf:no-org", env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("rill pull: bad Hub model 'hf:no-org': 'no-org' is not a repository id ORG/REPO")
    missing = pull("hf:test/nope", env)
    assert missing.returncode == 2 and "rill pull: hf:test/nope: no repository test/nope on http://127.0.0.1:" in (
        missing.stderr)
    hub.fail_with = (401, "RepoNotFound")
    private = pull("hf:test/quants:Q8_0", env)
    assert private.returncode == 2 and "set HF_TOKEN" in private.stderr
    assert "Traceback" not in bad.stderr + missing.stderr + private.stderr


def test_rill_serve_and_rill_toml_refuse_a_bad_spec_before_starting(tmp_path, capsys):
    assert main(["serve", "--model", "hf:just-a-name"]) == 2
    assert capsys.readouterr().err.startswith("rill: bad Hub model 'hf:just-a-name'")
    config = tmp_path / "rill.toml"
    config.write_text('[[models]]\npath = "hf:org/repo:"\n')
    with pytest.raises(Exception) as caught:
        load_config_file(config)
    assert str(caught.value).startswith(f"{config}: model #1 ('hf:org/repo:'): bad Hub model 'hf:org/repo:'")
