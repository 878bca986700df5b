"""A local stand-in for the Hugging Face Hub, so the real huggingface_hub code runs offline.

It serves the routes huggingface_hub 2.x calls for what flextrain does (read from its
`hf_api.py`, `file_download.py`, `_snapshot_download.py` and `utils/_http.py`):

- `GET /api/models?search=&pipeline_tag=&filter=&num_parameters=&sort=&limit=` (list_models)
- `GET /api/models/{repo_id}` and `/api/models/{repo_id}/revision/{rev}` (model_info,
  repo_info; `?blobs=true` adds sizes and LFS facts to `siblings`)
- `GET /api/models/{repo_id}/tree/{rev}?recursive=` (list_repo_tree, used by snapshot_download)
- `HEAD`/`GET /{repo_id}/resolve/{rev}/{path}` with `ETag` (sha256 for LFS files, the git
  blob sha1 otherwise), `X-Repo-Commit`, `Content-Length`, and `Range` answered with 206 and
  `Content-Range`, as the hub does.

Errors carry the hub's `X-Error-Code` headers, which huggingface_hub turns into its own
exceptions: an unknown repo is 401 `RepoNotFound`, an unknown revision 404
`RevisionNotFound`, a gated repo's files 401 (no token) or 403 (token without access)
`GatedRepo`, an unknown token 401 "Invalid credentials in Authorization header".

`drop_after(filename, n)` makes the next GET of that file stop after n bytes and close the
connection, like a network failure mid-download.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")
APPROVED_TOKEN = "hf_approved_token"  # may read every gated repo
UNAPPROVED_TOKEN = "hf_valid_but_not_approved"  # a real account that has not accepted terms


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a file: what the hub sends as ETag for files not in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    repo_id: str
    files: dict[str, bytes]
    pipeline_tag: str | None = None
    library_name: str | None = "transformers"
    license: str | None = None
    gated: str | bool = False
    downloads: int = 0
    likes: int = 0
    num_parameters: int | None = None

    @property
    def sha(self) -> str:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return digest.hexdigest()

    @property
    def tags(self) -> list[str]:
        tags = [t for t in (self.library_name, self.pipeline_tag) if t]
        if self.license:
            tags.append(f"license:{self.license}")
        if any(name.endswith(".safetensors") for name in self.files):
            tags.append("safetensors")
        return tags

    def etag(self, name: str) -> str:
        data = self.files[name]
        if name.endswith(LFS_SUFFIXES):
            return hashlib.sha256(data).hexdigest()
        return git_blob_sha1(data)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "_id": self.sha[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": self.repo_id.split("/")[0],
            "sha": self.sha,
            "private": False,
            "gated": self.gated,
            "disabled": False,
            "downloads": self.downloads,
            "likes": self.likes,
            "library_name": self.library_name,
            "pipeline_tag": self.pipeline_tag,
            "tags": self.tags,
            "createdAt": "2026-01-01T00:00:00.000Z",
            "lastModified": "2026-01-02T00:00:00.000Z",
        }
        if self.num_parameters is not None:
            out["safetensors"] = {
                "parameters": {"F32": self.num_parameters},
                "total": self.num_parameters,
            }
        return out

    def sibling(self, name: str, blobs: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": name}
        if blobs:
            data = self.files[name]
            entry["size"] = len(data)
            entry["blobId"] = git_blob_sha1(data)
            if name.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"size": len(data), "sha256": self.etag(name), "pointerSize": 134}
        return entry

    def tree_entry(self, name: str) -> dict[str, Any]:
        data = self.files[name]
        entry: dict[str, Any] = {
            "type": "file",
            "oid": git_blob_sha1(data),
            "size": len(data),
            "path": name,
        }
        if name.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"oid": self.etag(name), "size": len(data), "pointerSize": 134}
        return entry


@dataclass
class SeenRequest:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class FakeHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[SeenRequest] = field(default_factory=list)
    url: str = ""
    _drops: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, repo: HubRepo) -> HubRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def drop_after(self, filename: str, nbytes: int) -> None:
        """The next GET of `filename` (any repo) sends `nbytes` and closes the connection."""
        with self._lock:
            self._drops[filename] = nbytes

    def take_drop(self, filename: str) -> int | None:
        with self._lock:
            return self._drops.pop(filename, None)

    def downloads_of(self, filename: str) -> list[SeenRequest]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith(f"/{filename}")]


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?/?$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)/?$")
_SIZE = re.compile(r"^(?P<n>[0-9.]+)(?P<unit>[KMBT]?)$", re.IGNORECASE)
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def _count(text: str) -> float:
    match = _SIZE.match(text.strip())
    if match is None:
        return float("nan")
    return float(match["n"]) * _UNITS[match["unit"].upper()]


def _within(count: int | None, kind: str, limit: float) -> bool:
    if count is None:
        return False
    return count <= limit if kind == "max" else count >= limit


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:  # noqa: C901 - one fake hub, one place
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_GET(self) -> None:
            self._route("GET")

        # -- plumbing ----------------------------------------------------------------
        def _route(self, method: str) -> None:
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            query = parse_qs(parts.query)
            hub.requests.append(
                SeenRequest(
                    method, path, self.headers.get("Range"), self.headers.get("Authorization")
                )
            )
            token = self._token()
            if token is not None and token not in (APPROVED_TOKEN, UNAPPROVED_TOKEN):
                self._error(401, None, "Invalid credentials in Authorization header")
                return
            if method == "GET" and path == "/api/models":
                self._json(self._search(query))
            elif match := _TREE.match(path):
                repo = self._repo(match["repo"], match["rev"])
                if repo is not None:
                    self._json([repo.tree_entry(name) for name in sorted(repo.files)])
            elif match := _INFO.match(path):
                repo = self._repo(match["repo"], match["rev"])
                if repo is not None:
                    blobs = query.get("blobs", ["false"])[0].lower() == "true"
                    info = repo.summary()
                    info["siblings"] = [repo.sibling(n, blobs) for n in sorted(repo.files)]
                    info["cardData"] = {"license": repo.license} if repo.license else {}
                    self._json(info)
            elif match := _RESOLVE.match(path):
                self._file(method, match["repo"], match["rev"], match["path"], token)
            else:
                self._error(404, None, "Not found")

        def _token(self) -> str | None:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None

        def _send(self, status: int, headers: dict[str, str], body: bytes, *, head: bool) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, value: Any) -> None:
            body = json.dumps(value).encode()
            headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
            self._send(200, headers, body, head=False)

        def _error(self, status: int, code: str | None, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            headers = {
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
                "X-Error-Message": message,
            }
            if code:
                headers["X-Error-Code"] = code
            self._send(status, headers, body, head=self.command == "HEAD")

        def _repo(self, repo_id: str, revision: str | None) -> HubRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(401, "RepoNotFound", "Repository not found")
                return None
            if revision not in (None, "main", repo.sha):
                self._error(404, "RevisionNotFound", "Invalid rev id: " + str(revision))
                return None
            return repo

        # -- routes ------------------------------------------------------------------
        def _search(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
            repos = list(hub.repos.values())
            if search := query.get("search", [""])[0].lower():
                repos = [r for r in repos if search in r.repo_id.lower()]
            if task := query.get("pipeline_tag", [""])[0]:
                repos = [r for r in repos if r.pipeline_tag == task]
            for tag in query.get("filter", []):
                repos = [r for r in repos if tag in r.tags]
            for bound in query.get("num_parameters", [""])[0].split(","):
                kind, _, value = bound.partition(":")
                if kind in ("min", "max") and value:
                    limit = _count(value)
                    repos = [
                        r
                        for r in repos
                        if r.num_parameters is not None
                        and (
                            r.num_parameters <= limit
                            if kind == "max"
                            else r.num_parameters >= limit
                        )
                    ]
            if query.get("sort", [""])[0] == "downloads":
                repos.sort(key=lambda r: r.downloads, reverse=True)
            limit_text = query.get("limit", [""])[0]
            if limit_text.isdigit():
                repos = repos[: int(limit_text)]
            return [r.summary() for r in repos]

        def _file(self, method: str, repo_id: str, rev: str, name: str, token: str | None) -> None:
            repo = self._repo(repo_id, rev)
            if repo is None:
                return
            if repo.gated and token != APPROVED_TOKEN:
                status = 401 if token is None else 403
                self._error(
                    status,
                    "GatedRepo",
                    f"Access to model {repo_id} is restricted. You must have access to it and be "
                    "authenticated to access it. Please log in.",
                )
                return
            data = repo.files.get(name)
            if data is None:
                self._error(404, "EntryNotFound", f"{name} does not exist on main")
                return
            start = 0
            status = 200
            headers = {
                "ETag": f'"{repo.etag(name)}"',
                "X-Repo-Commit": repo.sha,
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            wanted = self.headers.get("Range")
            if wanted and (match := re.match(r"bytes=(\d+)-$", wanted.strip())):
                start = int(match[1])
                if start >= len(data):
                    headers["Content-Range"] = f"bytes */{len(data)}"
                    headers["Content-Length"] = "0"
                    self._send(416, headers, b"", head=True)
                    return
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            headers["Content-Length"] = str(len(body))
            drop = hub.take_drop(name) if method == "GET" else None
            if drop is None:
                self._send(status, headers, body, head=method == "HEAD")
                return
            # A network failure mid-body: promise the whole file, send part, hang up.
            self._send(status, headers, body[:drop], head=False)
            self.wfile.flush()
            self.close_connection = True

    return Handler


@contextmanager
def serve(hub: FakeHub) -> Iterator[FakeHub]:
    """Run `hub` on a free loopback port in a thread until the generator is closed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="fake-hub", daemon=True
    )
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file of a saved model folder, by its path relative to the folder."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# -- the repos the tests pull, and the fixture plumbing -------------------------------------
TINY = "acme/tiny-llama"
BERT = "acme/tiny-bert"
WIDE = "acme/wide-llama"  # one safetensors file over huggingface_hub's 10 MiB read chunk
GATED = "acme/gated-llama"
PICKLE = "acme/pickle-llama"
HUGE = "acme/huge-llama"  # listed with 7B parameters; only its config is served
WIDE_VOCAB = 44_000


def build_repo_folders(models_cache: Path) -> dict[str, Path]:
    """Model folders written by flextrain's own builtin code, built once per cache."""
    from flextrain.models.builtin import (
        TINY_BERT_ID,
        TINY_LLAMA_ID,
        builtin_path,
        save_random_llama,
    )

    tiny = builtin_path(TINY_LLAMA_ID, models_cache)
    bert = builtin_path(TINY_BERT_ID, models_cache)
    wide = models_cache / "hub-wide-llama"
    if not (wide / "model.safetensors").exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tiny)
        tmp = models_cache / ".hub-wide-llama-build"
        save_random_llama(
            tmp,
            tokenizer,
            hidden=64,
            intermediate=128,
            layers=1,
            heads=4,
            kv_heads=2,
            vocab_size=WIDE_VOCAB,
        )
        tmp.rename(wide)
    return {TINY: tiny, BERT: bert, WIDE: wide}


def standard_repos(folders: dict[str, Path]) -> list[HubRepo]:
    tiny = folder_files(folders[TINY])
    config = {"config.json": tiny["config.json"]}
    return [
        HubRepo(
            TINY,
            tiny,
            "text-generation",
            license="apache-2.0",
            downloads=500,
            num_parameters=len(tiny["model.safetensors"]) // 4,
        ),
        HubRepo(
            BERT,
            folder_files(folders[BERT]),
            "fill-mask",
            license="mit",
            downloads=300,
            num_parameters=len(folder_files(folders[BERT])["model.safetensors"]) // 4,
        ),
        HubRepo(
            WIDE,
            folder_files(folders[WIDE]),
            "text-generation",
            license="apache-2.0",
            downloads=100,
            num_parameters=WIDE_VOCAB * 64,
        ),
        HubRepo(
            GATED,
            tiny,
            "text-generation",
            license="llama3",
            gated="manual",
            downloads=900,
            num_parameters=len(tiny["model.safetensors"]) // 4,
        ),
        HubRepo(
            PICKLE,
            {**config, "pytorch_model.bin": b"not really a pickle"},
            "text-generation",
            license="apache-2.0",
            downloads=50,
        ),
        HubRepo(
            HUGE,
            config,
            "text-generation",
            license="apache-2.0",
            downloads=10_000,
            num_parameters=7_000_000_000,
        ),
    ]


@dataclass
class LocalHub:
    """A running fake hub and the hub cache the environment points at."""

    hub: FakeHub
    cache: Path

    @property
    def url(self) -> str:
        return self.hub.url


def use_hub(hub: FakeHub, cache: Path, monkeypatch: Any) -> LocalHub:
    """Point the environment (and huggingface_hub's import-time copies of it) at `hub`.

    huggingface_hub reads HF_HUB_OFFLINE, HF_HUB_CACHE and the token file's path when it
    is imported; the test suite imports it offline, so the constants are set here too
    (monkeypatch restores them). The endpoint is read by flextrain from HF_ENDPOINT and
    passed to every call.
    """
    from huggingface_hub import constants

    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache.parent / "no-saved-token"))
    return LocalHub(hub, cache)


def local_hub_fixture(models_cache: Path, tmp_path: Path, monkeypatch: Any) -> Iterator[LocalHub]:
    """The body of each test module's `local_hub` fixture: the standard repos, served."""
    hub = FakeHub()
    for repo in standard_repos(build_repo_folders(models_cache)):
        hub.add(repo)
    with serve(hub):
        yield use_hub(hub, tmp_path / "hf-cache", monkeypatch)


def go_offline(monkeypatch: Any) -> None:
    """HF_HUB_OFFLINE=1 again (as the suite runs), e.g. to use a pulled model offline."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
