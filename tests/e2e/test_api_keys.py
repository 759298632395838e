"""API keys on a real `rill serve --api-key` through the official openai client: a wrong key is
openai.AuthenticationError; a key made with `rill keys create` while the server runs works at once
and owns what it stores; once revoked it is refused within the cache's TTL."""

from __future__ import annotations

import os
import subprocess
import time

import openai
import pytest

from rill.api.http.auth import CACHE_TTL_S
from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL, RILL

pytestmark = pytest.mark.e2e

OPERATOR_KEY = "e2e-operator-key-0123456789"


def client(root: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=root + "/v1", api_key=key, max_retries=0, timeout=CLIENT_TIMEOUT_S)


def rill_keys(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RILL_")}
    return subprocess.run([str(RILL), "keys", *args], env=env, capture_output=True, text=True, check=True,
                          timeout=60).stdout


def test_keys_through_the_openai_client(rill_factory, tmp_path):
    url = f"sqlite:///{tmp_path / 'rill.db'}"
    server = rill_factory("--api-key", OPERATOR_KEY, "--database-url", url, cached=False)
    try:
        with client(server.url, "wrong-key-0123456789") as wrong, pytest.raises(openai.AuthenticationError) as refused:
            wrong.models.list()
        assert refused.value.code == "invalid_api_key"
        secret = rill_keys("create", "--name", "e2e", "--database-url", url).strip()
        with client(server.url, OPERATOR_KEY) as operator, client(server.url, secret) as alice:
            assert [m.id for m in operator.models.list().data] == [MODEL]
            made = alice.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=2, temperature=0, store=True)
            assert alice.chat.completions.retrieve(made.id).id == made.id
            assert operator.chat.completions.retrieve(made.id).id == made.id, "the admin sees every key's"

            key_id = rill_keys("list", "--database-url", url).splitlines()[1].split()[0]
            rill_keys("revoke", key_id, "--database-url", url)
            deadline = time.monotonic() + CACHE_TTL_S + 30  # the TTL, plus slack for a busy machine
            while True:
                try:
                    alice.models.list()
                except openai.AuthenticationError:
                    break
                assert time.monotonic() < deadline, f"a revoked key still worked {CACHE_TTL_S + 30:.0f} s later"
                time.sleep(0.2)
    finally:
        server.stop()
