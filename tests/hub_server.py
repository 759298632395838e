"""A loopback Hugging Face Hub: the part of the Hub's HTTP API that huggingface_hub's downloads
use, over real sockets, serving each repository from a local folder (point HF_ENDPOINT, or
`endpoint=`, at `HubServer.url`).

    GET  /api/models/ORG/REPO[/revision/REV]     model_info: sha, siblings (with sizes)
    GET  /api/models/ORG/REPO/tree/REV[/PATH]    list_repo_tree (one page)
    HEAD /ORG/REPO/resolve/REV/PATH              X-Repo-Commit, ETag, size; .gguf/.safetensors (LFS on the Hub)
    GET  /ORG/REPO/resolve/REV/PATH              ... answer 302 to a "CDN" (localhost: another host, as the
    GET  /cdn/SHA256                              Hub's CDN is) with X-Linked-Etag and X-Linked-Size; Range

REV is `main` or the repo's commit (derived from its files). No Xet headers: downloads are plain
HTTP. Knobs: `cut_after` (the next file body stops after N bytes and the connection closes, once),
`stall_after` (the next file body stops after N bytes, sets `stalled` and holds the connection
until `release` is set or the server stops: a download to interrupt), `fail_with` (every request
answers that status and X-Error-Code), `token` (requests without `Authorization: Bearer TOKEN` get
the Hub's 401). Every request is recorded in `requests`.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class HubFile:
    path: str  # in the repo
    local: Path
    size: int
    sha256: str
    oid: str  # the git blob id (of the LFS pointer, for an LFS file)

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES)


@dataclass(frozen=True)
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    commit: str


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # with the query
    headers: dict[str, str]  # lower-cased names


def _repo(repo_id: str, folder: Path) -> HubRepo:
    files = {}
    for local in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with local.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        path, size = local.relative_to(folder).as_posix(), local.stat().st_size
        sha256 = digest.hexdigest()
        blob = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
        if not path.endswith(LFS_SUFFIXES):
            blob = local.read_bytes()
        oid = hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()
        files[path] = HubFile(path, local, size, sha256, oid)
    commit = hashlib.sha1(json.dumps(sorted((p, f.sha256) for p, f in files.items())).encode()).hexdigest()
    return HubRepo(repo_id, files, commit)


class HubServer:
    def __init__(self, repos: dict[str, Path]):
        self.repos = {repo_id: _repo(repo_id, folder) for repo_id, folder in repos.items()}
        self.cut_after: int | None = None
        self.stall_after: int | None = None
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.fail_with: tuple[int, str | None] | None = None
        self.token: str | None = None
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._http.daemon_threads = True
        self._http.handle_error = lambda request, address: None  # a client gone mid-body is expected here
        self.port = self._http.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cdn = f"http://localhost:{self.port}"  # another host name: huggingface_hub does not follow it on HEAD
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "HubServer":
        self._thread = threading.Thread(target=self._http.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop listening: later requests are refused (no Hub on the network)."""
        self.release.set()
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join()
            self._thread = None
        self._http.server_close()

    def seen(self, method: str | None = None, path_prefix: str = "") -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method)
                    and r.path.startswith(path_prefix)]

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def _take_cut(self) -> tuple[int | None, bool]:
        """(where the next body stops, whether it then stalls), once."""
        with self._lock:
            cut, self.cut_after = self.cut_after, None
            stall, self.stall_after = self.stall_after, None
            return (cut, False) if cut is not None else (stall, stall is not None)


_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+)|/tree/(?P<tree>[^/]+)(?P<sub>/.*)?)?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")
_RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, *, head: bool) -> None:
            hub._record(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            path = unquote(urlsplit(self.path).path)
            if hub.fail_with is not None:
                return self._error(*hub.fail_with)
            if match := _CDN.match(path):  # a signed CDN URL: no token needed
                found = [f for repo in hub.repos.values() for f in repo.files.values() if f.sha256 == match["sha"]]
                return self._file(found[0], head=head) if found else self._error(404, None)
            if hub.token is not None and self.headers.get("Authorization") != f"Bearer {hub.token}":
                return self._error(401, "RepoNotFound", "Invalid username or password.")
            if match := _API.match(urlsplit(self.path).path):
                return self._api(match, head=head)
            if match := _RESOLVE.match(urlsplit(self.path).path):
                return self._resolve(match, head=head)
            self._error(404, None)

        def _lookup(self, repo_id: str, revision: str) -> HubRepo | None:
            repo = hub.repos.get(unquote(repo_id))
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
            elif unquote(revision) not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", "Invalid rev id", commit=None)
                repo = None
            return repo

        def _api(self, match: re.Match[str], *, head: bool) -> None:
            repo = self._lookup(match["repo"], match["tree"] or match["rev"] or "main")
            if repo is None:
                return
            if match["tree"] is None:
                body = {"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "private": False,
                        "gated": False, "siblings": [_sibling(f) for f in repo.files.values()]}
            else:
                under = unquote(match["sub"] or "/").strip("/")
                files = [f for f in repo.files.values() if not under or f.path.startswith(under + "/")]
                folders = sorted({p for f in files for p in _parents(f.path) if p.startswith(under)} - {under, ""})
                body = [{"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}
                        for p in folders] + [_tree_entry(f) for f in files]
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def _resolve(self, match: re.Match[str], *, head: bool) -> None:
            repo = self._lookup(match["repo"], match["rev"])
            if repo is None:
                return
            file = repo.files.get(unquote(match["path"]))
            if file is None:
                return self._error(404, "EntryNotFound", "Entry not found", commit=repo.commit)
            if file.lfs:  # as the Hub: the metadata on a redirect to the CDN, which serves the bytes
                self.send_response(302)
                self.send_header("Location", f"{hub.cdn}/cdn/{file.sha256}")
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("ETag", f'"{file.oid}"')
                self.send_header("X-Linked-Etag", f'"{file.sha256}"')
                self.send_header("X-Linked-Size", str(file.size))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._file(file, head=head, commit=repo.commit)

        def _file(self, file: HubFile, *, head: bool, commit: str | None = None) -> None:
            start, end = 0, file.size - 1
            ranged = _RANGE.match(self.headers.get("Range", ""))
            if ranged:
                start = int(ranged["start"])
                end = min(int(ranged["end"] or end), end)
            self.send_response(206 if ranged else 200)
            if ranged:
                self.send_header("Content-Range", f"bytes {start}-{end}/{file.size}")
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", f'"{file.sha256 if file.lfs else file.oid}"')
            self.send_header("Accept-Ranges", "bytes")
            name = file.path.rsplit("/", 1)[-1]  # as the Hub's CDN names it (huggingface_hub's bar shows it)
            self.send_header("Content-Disposition", f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            if head:
                return
            cut, stall = hub._take_cut()
            left = end - start + 1 if cut is None else min(cut, end - start + 1)
            with file.local.open("rb") as f:
                f.seek(start)
                while left > 0:
                    chunk = f.read(min(_CHUNK, left))
                    self.wfile.write(chunk)
                    left -= len(chunk)
            if cut is not None:  # the connection drops mid-body: the client sees too few bytes
                self.wfile.flush()
                self.close_connection = True
            if stall:
                hub.stalled.set()
                hub.release.wait()

        def _error(self, status: int, code: str | None, message: str = "", *, commit: str | None = None) -> None:
            data = json.dumps({"error": message or f"error {status}"}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            if message:
                self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


def _sibling(f: HubFile) -> dict:
    out = {"rfilename": f.path, "size": f.size, "blobId": f.oid}
    if f.lfs:
        out["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
    return out


def _tree_entry(f: HubFile) -> dict:
    out = {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
    if f.lfs:
        out["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
    return out


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def write_repo(folder: Path, files: dict[str, bytes | Path]) -> Path:
    """A repository's folder: each path gets the bytes given, or links to the file given (the
    embedded GGUF is served without a copy)."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            path.symlink_to(content)
        else:
            path.write_bytes(content)
    return folder


def fake_bytes(size: int, seed: int = 0) -> bytes:
    """size bytes that differ from file to file (a resumed download must land each byte in place)."""
    return b"".join(hashlib.sha256(b"%d-%d" % (seed, i)).digest() for i in range(size // 32 + 1))[:size]
