"""`rill keys create | list | revoke`: the API keys in the server's database. add_keys_parser()
adds the subcommand to an argparse subparsers object, run_keys() runs it and returns the exit code
(0: done; 2: bad arguments, an unusable database or no such key).

`create` writes the secret alone on stdout (`KEY=$(rill keys create --name ci)`) and what it made
on stderr; the secret is never shown again, and `list` shows only its first characters. A running
server notices new and revoked keys within a few seconds (rill.api.http.auth.CACHE_TTL_S).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Awaitable, Callable

from rill.errors import ConfigError
from rill.store.database import default_database_url, open_database
from rill.store.keys import KeyRecord, KeyStore


def add_keys_parser(subparsers) -> None:
    p = subparsers.add_parser("keys", help="create, list and revoke API keys",
                              description="Manage the API keys in the server's database. Once a key "
                                          "exists (revoked ones count) or with --api-key, every request "
                                          "but GET /health needs `Authorization: Bearer KEY`.")
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--database-url", default=os.environ.get("RILL_DATABASE_URL") or None,
                          help="the server's database: sqlite:///PATH or postgresql://... "
                               "[env RILL_DATABASE_URL; default: rill.db in $RILL_DATA_DIR, else "
                               "~/.local/share/rill]")
    actions = p.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", parents=[database], help="make a key and print its secret once")
    create.add_argument("--name", required=True, help="what the key is for, e.g. ci or alice")
    create.add_argument("--admin", action="store_true", help="the key sees every key's spans and completions")
    actions.add_parser("list", parents=[database], help="show every key (never the secrets)")
    revoke = actions.add_parser("revoke", parents=[database], help="refuse a key from now on")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id, as `rill keys list` shows it")


def run_keys(args: argparse.Namespace) -> int:
    command: Callable[[KeyStore], Awaitable[None]] = {
        "create": lambda keys: _create(keys, args.name, admin=args.admin),
        "list": _list,
        "revoke": lambda keys: _revoke(keys, args.key_id),
    }[args.keys_command]
    try:
        asyncio.run(_with_store(args.database_url or default_database_url(), command))
    except ConfigError as exc:
        print(f"rill keys: {exc.message}", file=sys.stderr)
        return 2
    return 0


async def _with_store(url: str, command: Callable[[KeyStore], Awaitable[None]]) -> None:
    engine = await open_database(url)
    try:
        await command(KeyStore(engine))
    finally:
        await engine.dispose()


async def _create(keys: KeyStore, name: str, *, admin: bool) -> None:
    name = name.strip()
    if not name:
        raise ConfigError("--name must not be empty")
    record, secret = await keys.create(name, admin=admin)
    print(secret, flush=True)
    print(f"created {'admin ' if record.admin else ''}key {record.id} ({record.name}); "
          "the secret above is shown only this once", file=sys.stderr)


async def _list(keys: KeyStore) -> None:
    sys.stdout.write(format_table(await keys.list()))


async def _revoke(keys: KeyStore, key_id: str) -> None:
    if not await keys.revoke(key_id):
        raise ConfigError(f"no active key with id {key_id!r} (see `rill keys list`)")
    print(f"revoked {key_id}; running servers refuse it within seconds", file=sys.stderr)


def format_table(records: list[KeyRecord]) -> str:
    rows = [("ID", "NAME", "PREFIX", "ADMIN", "CREATED", "REVOKED")]
    rows += [(r.id, r.name, r.prefix + "...", "yes" if r.admin else "no", _when(r.created),
              "-" if r.revoked is None else _when(r.revoked)) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n" for row in rows)


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(unix))
