"""A small Hugging Face Hub API emulator on 127.0.0.1, for round-trip tests of pushes and loads.

It implements what the unmodified `huggingface_hub` and `datasets` clients call to create a repo,
upload a folder in one commit (preupload, LFS batch + PUT, NDJSON commit) and read it back (repo
info with `siblings` and `cardData`, tree, paths-info, refs, resolve with Range). Clients reach it
with `HF_ENDPOINT=<emulator url>` and `HF_HUB_DISABLE_XET=1` (Xet storage is not emulated).

Everything lives in memory. Routes it does not know answer 404 and are recorded in
`unknown_routes`, so a client upgrade that calls something new shows up in the tests.

    with HubEmulator() as hub:
        env = hub.client_env(tmp_path)   # HF_ENDPOINT, HF_TOKEN, HF_HOME, ... for a subprocess
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml

USER = "lema-tester"
TOKEN = "hf_" + "EmulatorOnlyToken0123456789abcdef"  # fake credential, to check that none leaks
LFS_SUFFIXES = (
    ".parquet",
    ".safetensors",
    ".bin",
    ".png",
    ".jpg",
    ".pt",
    ".gguf",
    ".arrow",
    ".zip",
    ".model",
)
_PREFIX = {"dataset": "datasets/", "space": "spaces/", "model": ""}


@dataclass
class StoredFile:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.content)}\n".encode()

    @property
    def blob_id(self) -> str:
        """Git blob id of what git stores: the content, or the LFS pointer."""
        data = self.pointer if self.lfs else self.content
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, StoredFile]
    date: float = field(default_factory=time.time)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)


class HubState:
    """Repositories, commits and LFS objects (all in memory), plus a request log."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.unknown_routes: list[str] = []
        self.fail_next: list[int] = []  # status codes to answer the next commit calls with (transient faults)

    def create(self, repo_type: str, repo_id: str, private: bool) -> Repo | None:
        with self.lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                return None
            repo = Repo(repo_type, repo_id, private)
            oid = hashlib.sha1(f"init {repo_type}/{repo_id} {time.time()}".encode()).hexdigest()
            gitattributes = StoredFile(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", lfs=False)
            repo.commits[oid] = Commit(oid, None, "initial commit", {".gitattributes": gitattributes})
            repo.branches["main"] = oid
            self.repos[key] = repo
            return repo

    def resolve_commit(self, repo: Repo, revision: str) -> Commit | None:
        revision = unquote(revision)
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        if revision.startswith("refs/heads/") and revision[11:] in repo.branches:
            return repo.commits[repo.branches[revision[11:]]]
        return repo.commits.get(revision)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # ---------------------------------------------------------------- plumbing
    @property
    def state(self) -> HubState:
        return self.server.state

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False
    ):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None, head: bool = False):
        self._send(status, json.dumps(data).encode(), headers, head=head)

    def _error(self, status: int, message: str, head: bool = False):
        headers = {"X-Error-Message": message}
        if status == 404:
            headers["X-Error-Code"] = "RepoNotFound" if "Repository" in message else "EntryNotFound"
        self._json(status, {"error": message}, headers, head=head)

    def _repo(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.state.repos.get((repo_type, repo_id))

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ---------------------------------------------------------------- routing
    _TYPES = r"(?P<rtype>models|datasets|spaces)"
    _REPO = r"(?P<repo>[^/]+/[^/]+?)"

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        with self.state.lock:
            self.state.requests.append((method, path))
        routes = [
            ("GET", r"^/api/whoami-v2$", self.whoami),
            ("POST", r"^/api/repos/create$", self.create_repo),
            ("POST", r"^/api/validate-yaml$", self.validate_yaml),
            ("GET", rf"^/api/{self._TYPES}/{self._REPO}(?:/revision/(?P<rev>.+))?$", self.repo_info),
            ("POST", rf"^/api/{self._TYPES}/{self._REPO}/preupload/(?P<rev>.+)$", self.preupload),
            ("POST", rf"^/api/{self._TYPES}/{self._REPO}/commit/(?P<rev>.+)$", self.commit),
            ("GET", rf"^/api/{self._TYPES}/{self._REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?$", self.tree),
            ("POST", rf"^/api/{self._TYPES}/{self._REPO}/paths-info/(?P<rev>.+)$", self.paths_info),
            ("GET", rf"^/api/{self._TYPES}/{self._REPO}/refs$", self.refs),
            ("POST", rf"^/api/{self._TYPES}/{self._REPO}/branch/(?P<branch>.+)$", self.create_branch),
            ("GET", rf"^/api/{self._TYPES}/{self._REPO}/commits/(?P<rev>.+)$", self.list_commits),
            (
                "POST",
                rf"^/(?:(?P<rtype>datasets|spaces)/)?{self._REPO}\.git/info/lfs/objects/batch$",
                self.lfs_batch,
            ),
            ("PUT", r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$", self.lfs_put),
            (
                "GET",
                rf"^/(?:(?P<rtype>datasets|spaces)/)?{self._REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$",
                self.resolve,
            ),
            (
                "HEAD",
                rf"^/(?:(?P<rtype>datasets|spaces)/)?{self._REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$",
                self.resolve,
            ),
        ]
        for m, pattern, handler in routes:
            if m != method:
                continue
            match = re.match(pattern, path)
            if match:
                try:
                    handler(match.groupdict(), query, head=(method == "HEAD"))
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
        with self.state.lock:
            self.state.unknown_routes.append(f"{method} {self.path}")
        self._body()
        self._error(404, f"Emulator: unknown route {method} {path}", head=(method == "HEAD"))

    @staticmethod
    def _rtype(groups: dict[str, str | None]) -> str:
        raw = groups.get("rtype") or "models"
        return raw[:-1] if raw.endswith("s") else raw

    # ---------------------------------------------------------------- API
    def whoami(self, groups, query, head=False):
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {TOKEN}":
            return self._error(401, "Invalid credentials in Authorization header")
        self._json(
            200,
            {
                "type": "user",
                "name": USER,
                "fullname": "LeMa Tester",
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "emulator", "role": "write"}},
            },
        )

    def create_repo(self, groups, query, head=False):
        payload = json.loads(self._body() or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        repo_type = payload.get("type") or "model"
        repo_id = f"{org or USER}/{name}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = self.state.create(repo_type, repo_id, private)
        url = f"{self.server.url}/{_PREFIX[repo_type]}{repo_id}"
        if repo is None:
            return self._json(
                409,
                {"error": "You already created this repo", "url": url},
                {"X-Error-Message": "You already created this repo"},
            )
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def validate_yaml(self, groups, query, head=False):
        payload = json.loads(self._body() or b"{}")
        content = payload.get("content") or ""  # the whole README; the metadata is its front matter
        m = re.match(r"^---\s*\n(.*?\n)---", content, re.S)
        try:
            meta = yaml.safe_load(m.group(1)) if m else None
            if meta is not None and not isinstance(meta, dict):
                raise yaml.YAMLError("the metadata is not a mapping")
        except yaml.YAMLError as exc:
            return self._json(400, {"error": f"Invalid YAML: {exc}"})
        self._json(200, {"errors": [], "warnings": []})

    def _card_data(self, commit: Commit) -> dict | None:
        readme = commit.files.get("README.md")
        if readme is None:
            return None
        m = re.match(r"^---\s*\n(.*?\n)---", readme.content.decode("utf-8", "replace"), re.S)
        return (yaml.safe_load(m.group(1)) or None) if m else None

    def repo_info(self, groups, query, head=False):
        repo_type, repo_id = self._rtype(groups), groups["repo"]
        repo = self._repo(repo_type, repo_id)
        if repo is None:
            return self._error(404, f"Repository {repo_id} not found")
        commit = self.state.resolve_commit(repo, groups.get("rev") or "main")
        if commit is None:
            return self._error(404, f"Revision Not Found for {repo_id}")
        siblings = []
        for path, f in sorted(commit.files.items()):
            sib: dict[str, Any] = {"rfilename": path}
            if query.get("blobs") or query.get("files_metadata"):
                sib.update({"size": len(f.content), "blobId": f.blob_id})
                if f.lfs:
                    sib["lfs"] = {"sha256": f.sha256, "size": len(f.content), "pointerSize": len(f.pointer)}
            siblings.append(sib)
        info: dict[str, Any] = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.oid,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date)),
            "createdAt": "2024-01-01T00:00:00.000Z",
            "usedStorage": sum(len(f.content) for f in commit.files.values()),
        }
        card = self._card_data(commit)
        if card is not None:
            info["cardData"] = card
        if repo_type == "model":
            info["modelId"] = repo_id
        if repo_type == "space":
            info["sdk"] = (card or {}).get("sdk")
        self._json(200, info, head=head)

    def preupload(self, groups, query, head=False):
        payload = json.loads(self._body() or b"{}")
        repo = self._repo(self._rtype(groups), groups["repo"])
        if repo is None:
            return self._error(404, f"Repository {groups['repo']} not found")
        files = []
        for f in payload.get("files", []):
            sample = base64.b64decode(f.get("sample") or "")
            binary = b"\0" in sample
            lfs = f["path"].endswith(LFS_SUFFIXES) or binary or f.get("size", 0) > 10 * 1024 * 1024
            files.append(
                {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            )
        self._json(200, {"files": files, "commitOid": repo.branches.get("main")})

    def lfs_batch(self, groups, query, head=False):
        payload = json.loads(self._body() or b"{}")
        if payload.get("operation") != "upload":
            return self._json(400, {"message": "Emulator: only LFS uploads are supported"})
        objects = []
        for obj in payload.get("objects", []):
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.state.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.server.url}/lfs-upload/{obj['oid']}", "header": {}}
                }
            objects.append(entry)
        self._json(
            200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}
        )

    def lfs_put(self, groups, query, head=False):
        data = self._body()
        if hashlib.sha256(data).hexdigest() != groups["oid"]:
            return self._error(400, "LFS object does not match its sha256")
        with self.state.lock:
            self.state.lfs_objects[groups["oid"]] = data
        self._send(200, b"", {"Content-Type": "text/plain"})

    def commit(self, groups, query, head=False):
        repo_type, repo_id = self._rtype(groups), groups["repo"]
        body = self._body()
        with self.state.lock:
            if self.state.fail_next:
                status = self.state.fail_next.pop(0)
                return self._error(status, f"Emulator: injected transient error {status}")
        repo = self._repo(repo_type, repo_id)
        if repo is None:
            return self._error(404, f"Repository {repo_id} not found")
        branch = unquote(groups["rev"])
        if branch not in repo.branches:
            return self._error(404, f"Invalid rev id: {branch}")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        with self.state.lock:
            parent = repo.commits[repo.branches[branch]]
            if header.get("parentCommit") and header["parentCommit"] != parent.oid:
                return self._error(412, "A commit has happened since the parent commit")
            files = dict(parent.files)
            for item in lines:
                key, value = item["key"], item["value"]
                if key == "file":
                    files[value["path"]] = StoredFile(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    data = self.state.lfs_objects.get(value["oid"])
                    if data is None:
                        return self._error(422, f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = StoredFile(data, lfs=True)
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: f for p, f in files.items() if not p.startswith(prefix)}
                elif key != "header":
                    return self._error(400, f"Emulator: unsupported commit operation {key}")
            digest = hashlib.sha1(
                parent.oid.encode()
                + json.dumps(sorted((p, f.blob_id) for p, f in files.items())).encode()
                + str(time.time_ns()).encode()
            ).hexdigest()
            repo.commits[digest] = Commit(digest, parent.oid, header.get("summary") or "", files)
            repo.branches[branch] = digest
        prefix = _PREFIX[repo_type]
        self._json(
            200,
            {
                "success": True,
                "commitOid": digest,
                "commitUrl": f"{self.server.url}/{prefix}{repo_id}/commit/{digest}",
                "commitMessage": header.get("summary"),
                "hookOutput": "",
            },
        )

    def _entries(self, commit: Commit, sub: str, recursive: bool) -> list[dict[str, Any]]:
        sub = sub.strip("/")
        prefix = sub + "/" if sub else ""
        out: dict[str, dict[str, Any]] = {}
        for path, f in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            if "/" in rest and not recursive:
                d = prefix + rest.split("/", 1)[0]
                out.setdefault(
                    d,
                    {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d},
                )
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = prefix + "/".join(parts[:i])
                    out.setdefault(
                        d,
                        {
                            "type": "directory",
                            "oid": hashlib.sha1(d.encode()).hexdigest(),
                            "size": 0,
                            "path": d,
                        },
                    )
            out[path] = self._file_entry(path, f, commit)
        return list(out.values())

    @staticmethod
    def _file_entry(path: str, f: StoredFile, commit: Commit) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "oid": f.blob_id,
            "size": len(f.content),
            "path": path,
            "lastCommit": {
                "id": commit.oid,
                "title": commit.message,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date)),
            },
        }
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": len(f.content), "pointerSize": len(f.pointer)}
        return entry

    def tree(self, groups, query, head=False):
        repo = self._repo(self._rtype(groups), groups["repo"])
        if repo is None:
            return self._error(404, f"Repository {groups['repo']} not found")
        commit = self.state.resolve_commit(repo, groups["rev"])
        if commit is None:
            return self._error(404, "Revision not found")
        sub = groups.get("sub") or ""
        recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        entries = self._entries(commit, sub, recursive)
        if sub and not entries:
            return self._error(404, f"Entry {sub} not found")
        self._json(200, entries)

    def paths_info(self, groups, query, head=False):
        repo = self._repo(self._rtype(groups), groups["repo"])
        if repo is None:
            return self._error(404, f"Repository {groups['repo']} not found")
        commit = self.state.resolve_commit(repo, groups["rev"])
        if commit is None:
            return self._error(404, "Revision not found")
        raw = self._body()
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(raw or b"{}").get("paths", [])
        else:
            paths = parse_qs(raw.decode()).get("paths", [])
        out = []
        for p in paths:
            p = p.strip("/")
            if p in commit.files:
                out.append(self._file_entry(p, commit.files[p], commit))
            elif any(f.startswith(p + "/") for f in commit.files):
                out.append(
                    {"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}
                )
        self._json(200, out)

    def refs(self, groups, query, head=False):
        repo = self._repo(self._rtype(groups), groups["repo"])
        if repo is None:
            return self._error(404, f"Repository {groups['repo']} not found")
        self._json(
            200,
            {
                "branches": [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": oid}
                    for b, oid in repo.branches.items()
                ],
                "tags": [],
                "converts": [],
            },
        )

    def create_branch(self, groups, query, head=False):
        payload = json.loads(self._body() or b"{}")
        repo = self._repo(self._rtype(groups), groups["repo"])
        if repo is None:
            return self._error(404, f"Repository {groups['repo']} not found")
        branch = unquote(groups["branch"])
        with self.state.lock:
            if branch in repo.branches:
                return self._error(409, f"Reference already exists: refs/heads/{branch}")
            start = self.state.resolve_commit(repo, payload.get("startingPoint") or "main")
            if start is None:
                return self._error(404, "Invalid starting point")
            repo.branches[branch] = start.oid
        self._json(200, {})

    def list_commits(self, groups, query, head=False):
        repo = self._repo(self._rtype(groups), groups["repo"])
        commit = self.state.resolve_commit(repo, groups["rev"]) if repo else None
        if commit is None:
            return self._error(404, "Revision not found")
        out = []
        while commit is not None:
            out.append(
                {
                    "id": commit.oid,
                    "title": commit.message,
                    "message": "",
                    "authors": [{"user": USER}],
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date)),
                }
            )
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._json(200, out)

    def resolve(self, groups, query, head=False):
        repo_type = {"datasets": "dataset", "spaces": "space"}.get(groups.get("rtype") or "", "model")
        repo = self._repo(repo_type, groups["repo"])
        if repo is None:
            return self._error(404, f"Repository {groups['repo']} not found", head=head)
        commit = self.state.resolve_commit(repo, groups["rev"])
        if commit is None:
            return self._error(404, "Revision not found", head=head)
        f = commit.files.get(groups["file"])
        if f is None:
            return self._error(404, f"Entry {groups['file']} not found", head=head)
        data = f.content
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.oid,
            "Accept-Ranges": "bytes",
            "ETag": f'"{f.sha256 if f.lfs else f.blob_id}"',
        }
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
            headers["X-Linked-Size"] = str(len(data))
        status = 200
        rng = self.headers.get("Range")
        if rng and (m := re.match(r"bytes=(\d*)-(\d*)$", rng.strip())):
            size = len(data)
            if m.group(1) == "":
                start, end = max(0, size - int(m.group(2))), size - 1
            else:
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}"}, head=head)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            data, status = data[start : end + 1], 206
        self._send(status, data, headers, head=head)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: HubState
    url: str


class HubEmulator:
    """Start with `with HubEmulator() as hub:`; `hub.url` is the endpoint, `hub.state` the storage."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = HubState()
        self._server = _Server((host, port), _Handler)
        self._server.state = self.state
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._server.url = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-emulator", daemon=True)

    def __enter__(self) -> HubEmulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def client_env(self, home: str | Path, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a client subprocess: online against this emulator, isolated caches."""
        import os

        env = dict(os.environ if base is None else base)
        for key in list(env):
            if key.startswith(("HF_", "HUGGINGFACE_")):
                del env[key]
        env.update(
            {
                "HF_ENDPOINT": self.url,
                "HF_TOKEN": TOKEN,
                "HF_HOME": str(Path(home) / "hf_home"),
                "HF_HUB_OFFLINE": "0",
                "HF_DATASETS_OFFLINE": "0",
                "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                "NO_PROXY": "127.0.0.1,localhost",
            }
        )
        return env

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict[str, bytes]:
        """{path: bytes} of a repo at a revision (what a clone would hold, LFS resolved)."""
        repo = self.state.repos[(repo_type, repo_id)]
        commit = self.state.resolve_commit(repo, revision)
        assert commit is not None, f"no revision {revision} in {repo_id}"
        return {p: f.content for p, f in commit.files.items()}

    def commits(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> list[Commit]:
        """Commits of a branch, newest first (the initial commit last)."""
        repo = self.state.repos[(repo_type, repo_id)]
        out, commit = [], self.state.resolve_commit(repo, revision)
        while commit is not None:
            out.append(commit)
            commit = repo.commits.get(commit.parent) if commit.parent else None
        return out

    def matching(self, repo_id: str, pattern: str, repo_type: str = "dataset") -> list[str]:
        return sorted(p for p in self.files(repo_id, repo_type) if fnmatch.fnmatch(p, pattern))


if __name__ == "__main__":  # manual debugging: python -m tests.hub_emulator
    with HubEmulator(port=8765) as hub:
        print(f"Hub emulator at {hub.url} (HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1 HF_TOKEN={TOKEN})")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
