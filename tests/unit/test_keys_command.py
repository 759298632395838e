"""`rill keys create | list | revoke` through rill.cli.main on a SQLite file, and `rill serve
--api-key` / RILL_API_KEY into ServerConfig."""

from __future__ import annotations

import asyncio
import re

import pytest

from rill.cli import build_parser, config_from_args, main
from rill.store.database import open_database
from rill.store.keys import KeyStore


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'rill.db'}"


def lookup(url: str, secret: str):
    async def go():
        engine = await open_database(url)
        try:
            return await KeyStore(engine).lookup(secret)
        finally:
            await engine.dispose()
    return asyncio.run(go())


def table(out: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line) for line in out.splitlines()]


def test_create_prints_only_the_secret_on_stdout(url, capsys):
    assert main(["keys", "create", "--name", "ci", "--database-url", url]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"rill-sk-[A-Za-z0-9_-]{43}\n", out), out
    record = lookup(url, out.strip())
    assert record is not None and record.name == "ci" and not record.admin
    assert record.id in err and "only this once" in err and out.strip() not in err


def test_list_shows_the_keys_but_never_a_secret(url, capsys):
    assert main(["keys", "create", "--name", "ci", "--database-url", url]) == 0
    assert main(["keys", "create", "--name", "ops", "--admin", "--database-url", url]) == 0
    secrets = capsys.readouterr().out.split()
    assert main(["keys", "list", "--database-url", url]) == 0
    out = capsys.readouterr().out
    rows = table(out)
    assert rows[0] == ["ID", "NAME", "PREFIX", "ADMIN", "CREATED", "REVOKED"]
    assert [(r[1], r[2], r[3], r[5]) for r in rows[1:]] == [
        ("ci", secrets[0][:12] + "...", "no", "-"), ("ops", secrets[1][:12] + "...", "yes", "-")]
    assert all(re.fullmatch(r"key_[0-9a-f]{12}", r[0]) for r in rows[1:])
    assert not any(secret in out for secret in secrets)


def test_revoke_refuses_the_key_and_list_says_when(url, capsys):
    assert main(["keys", "create", "--name", "ci", "--database-url", url]) == 0
    secret = capsys.readouterr().out.strip()
    key_id = lookup(url, secret).id
    assert main(["keys", "revoke", key_id, "--database-url", url]) == 0
    assert key_id in capsys.readouterr().err
    assert lookup(url, secret) is None
    assert main(["keys", "list", "--database-url", url]) == 0
    [row] = table(capsys.readouterr().out)[1:]
    assert row[0] == key_id and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", row[5]), row


def test_revoking_an_unknown_or_revoked_key_is_exit_2(url, capsys):
    assert main(["keys", "revoke", "key_000000000000", "--database-url", url]) == 2
    assert "no active key" in capsys.readouterr().err
    assert main(["keys", "create", "--name", "ci", "--database-url", url]) == 0
    key_id = lookup(url, capsys.readouterr().out.strip()).id
    assert main(["keys", "revoke", key_id, "--database-url", url]) == 0
    assert main(["keys", "revoke", key_id, "--database-url", url]) == 2


def test_bad_input_is_exit_2_with_a_message(url, capsys):
    assert main(["keys", "create", "--name", "  ", "--database-url", url]) == 2
    assert "--name" in capsys.readouterr().err
    assert main(["keys", "list", "--database-url", "mysql://x/y"]) == 2
    assert "unsupported database" in capsys.readouterr().err


def test_the_database_comes_from_the_environment(url, capsys, monkeypatch):
    monkeypatch.setenv("RILL_DATABASE_URL", url)
    assert main(["keys", "create", "--name", "ci"]) == 0
    assert lookup(url, capsys.readouterr().out.strip()) is not None


def test_the_default_database_is_the_servers(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RILL_DATABASE_URL", raising=False)
    monkeypatch.setenv("RILL_DATA_DIR", str(tmp_path / "data"))
    assert main(["keys", "create", "--name", "ci"]) == 0
    assert lookup(f"sqlite:///{tmp_path / 'data' / 'rill.db'}", capsys.readouterr().out.strip()) is not None


def test_serve_takes_repeated_api_keys(monkeypatch):
    monkeypatch.setenv("RILL_API_KEY", "from-the-environment-000")
    args = build_parser().parse_args(["serve", "--api-key", "first-key-0123456789", "--api-key",
                                      "second-key-0123456789"])
    assert config_from_args(args).api_keys == ("first-key-0123456789", "second-key-0123456789")


def test_serve_reads_comma_separated_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("RILL_API_KEY", "env-key-one-0123456789, env-key-two-0123456789")
    assert config_from_args(build_parser().parse_args(["serve"])).api_keys == (
        "env-key-one-0123456789", "env-key-two-0123456789")
    monkeypatch.delenv("RILL_API_KEY")
    assert config_from_args(build_parser().parse_args(["serve"])).api_keys == ()


def test_serve_with_a_short_key_is_exit_2(capsys):
    assert main(["serve", "--api-key", "short"]) == 2
    err = capsys.readouterr().err
    assert "--api-key" in err and "short" not in err.replace("--api-key", "")
