"""A Hugging Face model folder's tokenizer (tokenizer.json, run by the `tokenizers` library) and
chat template (tokenizer_config.json or chat_template.jinja), answering what LlamaVocab answers
for a GGUF file: tokens, each token's bytes, which tokens end a turn, an llguidance tokenizer.

A token's bytes: byte-level BPE vocabularies (GPT-2's, Llama 3's, Qwen's, SmolLM2's) spell bytes
as printable characters, undone by GPT-2's table; SentencePiece ones (Llama 2, Mistral) write a
space as U+2581 and unknown bytes as <0xNN>. Special tokens (added tokens marked special) show
no text, as llama.cpp's control tokens do.
"""

from __future__ import annotations

import json
import re
import threading
from functools import cache
from pathlib import Path
from typing import Any

from rill.backends.base import BackendError

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's bytes_to_unicode, inverted: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def read_json(path: Path) -> dict[str, Any]:
    """A model folder's JSON file (config.json, tokenizer.json, ...)."""
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read {path}: {exc}") from exc


def _token_text(value: Any) -> str:
    """tokenizer_config's bos_token / eos_token: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return str(value or "")


class HFVocab:
    def __init__(self, folder: Path):
        from tokenizers import Tokenizer

        path = folder / "tokenizer.json"
        if not path.is_file():
            raise BackendError(f"{folder} has no tokenizer.json (a fast Hugging Face tokenizer is needed)")
        self._json = path.read_text("utf-8")
        self._tokenizer = Tokenizer.from_str(self._json)
        spec = read_json(path)
        config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
        generation = (read_json(folder / "generation_config.json")
                      if (folder / "generation_config.json").is_file() else {})
        self.n_vocab = self._tokenizer.get_vocab_size(with_added_tokens=True)
        self.chat_template = self._template(folder, config)
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self._bos = self._tokenizer.token_to_id(self.bos_token) if self.bos_token else None
        self.add_bos = bool(config.get("add_bos_token", False)) and self._bos is not None
        special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
        added = {t["id"]: t["content"] for t in spec.get("added_tokens", [])}
        byte_level = "ByteLevel" in str(spec.get("decoder"))
        self._pieces = [self._bytes(i, special, added, byte_level) for i in range(self.n_vocab)]
        eos = generation.get("eos_token_id", [])
        self._eog = {*(eos if isinstance(eos, list) else [eos])} | {self._tokenizer.token_to_id(self.eos_token)}
        self._eog.discard(None)
        if not self._eog:
            raise BackendError(f"{folder.name}: no end-of-sequence token in tokenizer_config.json or "
                               "generation_config.json")
        self._guidance: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def _template(folder: Path, config: dict[str, Any]) -> str | None:
        template = config.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default") or next(iter(named.values()), None)
        if not template and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text("utf-8")
        return template or None

    def _bytes(self, token: int, special: set[int], added: dict[int, str], byte_level: bool) -> bytes:
        if token in special:
            return b""
        text = self._tokenizer.id_to_token(token)
        if text is None:
            return b""
        if token in added:  # added as plain text, not in the model's spelling
            return added[token].encode("utf-8")
        if byte_level:
            table = _byte_decoder()
            return bytes(table[c] for c in text) if all(c in table for c in text) else text.encode("utf-8")
        match = _BYTE_TOKEN.fullmatch(text)
        if match:
            return bytes([int(match.group(1), 16)])
        return text.replace("\u2581", " ").encode("utf-8")

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = True) -> list[int]:
        with self._lock:  # the switch is the tokenizer's state; the engine thread tokenizes too
            self._tokenizer.encode_special_tokens = not parse_special  # True: "<|im_end|>" as plain text
            ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        return [self._bos, *ids] if add_bos and self._bos is not None else ids

    def token_bytes(self, token: int) -> bytes:
        return self._pieces[token] if 0 <= token < len(self._pieces) else b""

    def is_end_of_generation(self, token: int) -> bool:
        return token in self._eog

    def control_tokens(self) -> tuple[str, ...]:
        # the tokenizers library finds added tokens in linear time (Aho-Corasick) and may prefix a
        # piece's first word (Metaspace): a prompt is tokenized in one call
        return ()

    def guidance_tokenizer(self) -> Any:
        if self._guidance is None:
            from llguidance import LLTokenizer

            eos = self._tokenizer.token_to_id(self.eos_token) if self.eos_token else None
            self._guidance = LLTokenizer(self._json, n_vocab=self.n_vocab, eos_token=min(self._eog) if eos is None else eos)
        return self._guidance

    def close(self) -> None:
        pass
