"""A small in-memory Hugging Face Hub server on 127.0.0.1, for tests: model repos only.

huggingface_hub offers no supported offline stand-in for uploads (its own tests run against a staging Hub), so the
push and load tests run the real ``huggingface_hub`` client (and ``transformers`` on top of it) against this fake
when ``HF_ENDPOINT`` points here. ``HF_ENDPOINT`` is read when ``huggingface_hub`` is imported, so run the client in a
subprocess: ``client_env`` builds its environment and ``run_client`` runs a snippet and returns what it prints.

    with running_local_hub(tmp_path, tokens={"hf_alice": "alice"}) as hub:
        run_client(hub, "hf_alice", "...; print(json.dumps(result))")

What it must track. The fake answers only what hf_vadapter's push (``hf_vadapter.hub.push``) and loading through
transformers call, as huggingface_hub 2.4.0 sends it; a new huggingface_hub release that changes any of these breaks
tests/test_local_hub.py first (it drives each endpoint with the real client), and that is where to look:

- the routes and their JSON shapes (hf_api.py: whoami, create_repo, create_branch, model_info, list_repo_tree;
  _commit_api.py: the preupload answer and the NDJSON commit payload; file_download.py: the resolve redirect and the
  ``X-Repo-Commit`` / ``ETag`` headers);
- the error headers the client turns into typed errors (utils/_http.py: ``X-Error-Code`` RepoNotFound,
  RevisionNotFound, EntryNotFound);
- blob ids as git blob SHA-1s (the client skips unchanged files by comparing them).

The endpoints:

- ``GET  /api/whoami-v2``                                   whoami
- ``POST /api/repos/create``                                create_repo (409 if it exists)
- ``POST /api/validate-yaml``                               README.md check (accepts everything)
- ``POST /api/models/{repo}/preupload/{rev}``               upload mode: always "regular"
- ``POST /api/models/{repo}/commit/{branch}``               NDJSON commit: inline files, deletions
- ``POST /api/models/{repo}/branch/{branch}``               create_branch
- ``GET  /api/models/{repo}/tree/{rev}[/{path}]``           list_repo_tree / list_repo_files
- ``GET  /api/models/{repo}[/revision/{rev}]``              model_info / repo_info
- ``GET|HEAD /{repo}/resolve/{rev}/{path}``                 downloads; a branch name answers
  307 to the same path pinned at the branch's commit, like the Hub's own redirect.

Uploads: the client takes each file's upload mode from the preupload answer alone
(it only forces empty files to "regular"), so answering "regular" for every file
sends even multi-MB binaries base64-encoded inside the commit payload. Revisions are
branch names or full 40-hex commit ids; commits go to existing branches only.

Auth: ``tokens`` maps bearer tokens to user names. A user owns the repos in its
own namespace and may write only there. Private repos are readable only by their
owner. An unknown token gets 401 "Invalid credentials in Authorization header"
(the client raises ``HfHubHTTPError``); a repo the caller may not see gets
``X-Error-Code: RepoNotFound`` (the client raises ``RepositoryNotFoundError``).

Ids: blob ids are git blob SHA-1s (what the client compares against to skip
unchanged files); commit ids are 40-hex SHA-1s over the parent, files, message and
a sequence number; folder ids are SHA-1s over the files below them (not git's tree
format).

NOT covered: dataset and Space repos; LFS and Xet uploads or downloads (preupload never answers "lfs", a
``lfsFile`` commit op is refused; the client must run with ``HF_HUB_DISABLE_XET=1``,
which ``client_env`` sets); ``.gitignore`` rules (nothing is ever "shouldIgnore");
pull requests (``create_pr`` is refused), tags, refs listing, short commit ids,
branch/repo deletion, repo renames and their redirects, namespace-less repo ids
("gpt2"); organisations, token scopes, gated repos; README metadata validation;
``expand``/``lastCommit``/security fields; Range requests (the full file is sent,
which the client accepts); pagination (one page); kernels; rate limits;
persistence (all state lives in memory and dies with the server).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

logger = logging.getLogger(__name__)

INITIAL_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_REPO = rf"(?P<repo>{_NAME}/{_NAME})"
_API_REPO = rf"/api/models/{_REPO}"
_RESOLVE = rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)"


class HubError(Exception):
    """An HTTP error answer: status, message, the Hub's ``X-Error-Code`` if any, extra headers and JSON fields."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.details: dict[str, Any] = {}


def git_blob_oid(data: bytes) -> str:
    """The git blob SHA-1 of ``data``, as ``git hash-object`` computes it."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    """The current UTC time in the ISO format the Hub uses."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Commit:
    """One immutable commit: its id, parent, title, date and file tree (path -> blob id)."""

    oid: str
    parent: str | None
    title: str
    date: str
    files: Mapping[str, str]


@dataclass
class Repo:
    """A model repository: visibility, branch heads and every commit by id."""

    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        """The namespace, which is also the only user allowed to write."""
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> Commit:
        """The commit a branch name or full commit id points to."""
        oid = self.branches.get(revision, revision if _COMMIT_SHA.fullmatch(revision) else None)
        if oid not in self.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[oid]


class HubState:
    """Users, repositories and blobs, guarded by one lock."""

    def __init__(self, tokens: Mapping[str, str]):
        self.tokens = dict(tokens)
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.lock = threading.RLock()
        self._sequence = 0

    def user(self, authorization: str | None) -> str | None:
        """The user behind an ``Authorization: Bearer`` header; None without one; 401 if unknown."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def readable(self, repo_id: str, user: str | None) -> Repo:
        """The repo if ``user`` may read it, else the Hub's RepoNotFound answer."""
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and user != repo.owner):
            status = 401 if user is None else 404
            raise HubError(status, "Repository not found", "RepoNotFound")
        return repo

    def writable(self, repo_id: str, user: str | None) -> Repo:
        """The repo if ``user`` may write to it: 401 anonymous, 403 someone else's."""
        if user is None:
            raise HubError(401, "You must be authenticated to write")
        repo = self.readable(repo_id, user)
        if user != repo.owner:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def create_repo(self, repo_id: str, private: bool, user: str | None) -> Repo:
        """Create a repo holding the Hub's initial ``.gitattributes`` commit on ``main``."""
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        if repo_id.split("/")[0] != user:
            raise HubError(403, f"You don't have the rights to create a repo under {repo_id.split('/')[0]}")
        with self.lock:
            if repo_id in self.repos:
                raise HubError(409, "You already created this model repo")
            repo = Repo(repo_id=repo_id, private=private, created_at=_now())
            first = self._new_commit(None, {".gitattributes": self.store(INITIAL_GITATTRIBUTES)}, "initial commit")
            repo.commits[first.oid] = first
            repo.branches["main"] = first.oid
            self.repos[repo_id] = repo
        return repo

    def commit(
        self, repo: Repo, branch: str, operations: list[FileOp], title: str, parent_commit: str | None
    ) -> Commit:
        """Apply ``operations`` in order on top of ``branch`` and move the branch to the new commit."""
        with self.lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            parent = repo.commits[repo.branches[branch]]
            if parent_commit is not None and parent.oid != parent_commit:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(parent.files)
            for op in operations:
                op.apply(files, self)
            commit = self._new_commit(parent.oid, files, title)
            repo.commits[commit.oid] = commit
            repo.branches[branch] = commit.oid
            return commit

    def create_branch(self, repo: Repo, branch: str, starting_point: str | None) -> None:
        """Point a new branch at ``starting_point`` (default: the head of ``main``); 409 if it exists."""
        with self.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            repo.branches[branch] = repo.resolve(starting_point or "main").oid

    def tree(self, commit: Commit, folder: str, recursive: bool) -> list[dict[str, Any]]:
        """Entries under ``folder`` ("" for the root) as ``/api/.../tree`` lists them, folders first."""
        prefix = f"{folder}/" if folder else ""
        below = {path: oid for path, oid in commit.files.items() if path.startswith(prefix)}
        if folder and not below:
            raise HubError(404, f"{folder} does not exist on this revision", "EntryNotFound")
        folders: set[str] = set()
        for path in below:
            parts = path[len(prefix) :].split("/")[:-1]
            depth = len(parts) if recursive else min(len(parts), 1)
            folders.update(prefix + "/".join(parts[: i + 1]) for i in range(depth))
        entries = [{"type": "directory", "oid": _folder_oid(below, f), "size": 0, "path": f} for f in sorted(folders)]
        for path, oid in sorted(below.items()):
            if recursive or "/" not in path[len(prefix) :]:
                entries.append({"type": "file", "oid": oid, "size": len(self.blobs[oid]), "path": path})
        return entries

    def store(self, data: bytes) -> str:
        """Keep ``data`` as a blob and return its id."""
        oid = git_blob_oid(data)
        self.blobs[oid] = data
        return oid

    def _new_commit(self, parent: str | None, files: dict[str, str], title: str) -> Commit:
        """A commit with a fresh id; the sequence number keeps identical trees apart."""
        self._sequence += 1
        seed = json.dumps([parent, sorted(files.items()), title, self._sequence])
        return Commit(hashlib.sha1(seed.encode()).hexdigest(), parent, title, _now(), files)


@dataclass(frozen=True)
class FileOp:
    """One commit operation: add ``data`` at ``path``, or delete a file or a folder."""

    path: str
    data: bytes | None = None  # None means delete
    is_folder: bool = False

    def apply(self, files: dict[str, str], state: HubState) -> None:
        """Change ``files`` (path -> blob id) in place; 404 when deleting what is not there."""
        if self.data is not None:
            files[self.path] = state.store(self.data)
            return
        doomed = [p for p in files if p.startswith(self.path.rstrip("/") + "/")] if self.is_folder else [self.path]
        if not doomed or any(p not in files for p in doomed):
            raise HubError(404, f"A file with this name doesn't exist: {self.path}", "EntryNotFound")
        for path in doomed:
            del files[path]


def _folder_oid(files: Mapping[str, str], folder: str) -> str:
    """A content hash of the files under ``folder`` (stable, but not git's tree id)."""
    listing = sorted((path, oid) for path, oid in files.items() if path.startswith(folder + "/"))
    return hashlib.sha1(json.dumps(listing).encode()).hexdigest()


def _check_path(path: str) -> str:
    """Refuse repo paths that are empty, absolute or climb out with ``..``."""
    if not path or path.startswith("/") or ".." in path.split("/"):
        raise HubError(400, f"Invalid path: {path!r}")
    return path


# ---------------------------------------------------------------------------- HTTP layer


@dataclass(frozen=True)
class Request:
    """What a route handler sees: path parameters (unquoted), query, body and caller."""

    args: dict[str, str]
    query: dict[str, list[str]]
    body: bytes
    user: str | None

    def flag(self, name: str) -> bool:
        """A boolean query parameter (``true``/``1``)."""
        return self.query.get(name, ["false"])[0].lower() in ("true", "1")

    def json(self) -> Any:
        """The body parsed as JSON; 400 if it is not."""
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Invalid JSON body: {error}") from error


@dataclass(frozen=True)
class Response:
    """A status, headers and body to send."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def _json(payload: Any) -> Response:
    """A 200 JSON response."""
    return Response(200, {"Content-Type": "application/json"}, json.dumps(payload).encode())


def _whoami(hub: LocalHub, req: Request) -> Response:
    """``GET /api/whoami-v2``: the caller's user record."""
    if req.user is None:
        raise HubError(401, "Authorization header is required")
    auth = {"type": "access_token", "accessToken": {"displayName": "local-hub", "role": "write"}}
    return _json({"type": "user", "id": req.user, "name": req.user, "fullname": req.user, "orgs": [], "auth": auth})


def _create_repo(hub: LocalHub, req: Request) -> Response:
    """``POST /api/repos/create``: new repo in the caller's (or the named) namespace."""
    payload = req.json()
    kind = payload.get("type") or "model"
    name = payload.get("name") or ""
    if kind != "model" or not re.fullmatch(_NAME, name):
        raise HubError(400, f"Unsupported repo type or name: {kind!r} {name!r}")
    private = payload.get("visibility") == "private" or payload.get("private") is True
    repo_id = f"{payload.get('organization') or req.user}/{name}"
    url = f"{hub.endpoint}/{repo_id}"
    try:
        hub.state.create_repo(repo_id, private, req.user)
    except HubError as error:
        if error.status == 409:
            error.details["url"] = url  # create_repo(exist_ok=True) reads it from the 409 answer
        raise
    return _json({"url": url, "name": repo_id, "id": repo_id})


def _validate_yaml(hub: LocalHub, req: Request) -> Response:
    """``POST /api/validate-yaml``: accept any README metadata."""
    return _json({"errors": [], "warnings": []})


def _writable_branch(hub: LocalHub, req: Request) -> tuple[Repo, str]:
    """The repo and branch of a write route; pull requests are refused."""
    if req.flag("create_pr"):
        raise HubError(400, "Pull requests are not supported by this local hub")
    return hub.state.writable(req.args["repo"], req.user), req.args["rev"]


def _preupload(hub: LocalHub, req: Request) -> Response:
    """``POST .../preupload/{rev}``: every file goes inline ("regular"), with its current blob id."""
    repo, rev = _writable_branch(hub, req)
    head = repo.resolve(rev)
    files = [
        {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": head.files.get(f["path"])}
        for f in req.json().get("files", [])
    ]
    return _json({"files": files, "commitOid": head.oid})


def _parse_commit(body: bytes) -> tuple[str, str | None, list[FileOp]]:
    """Title, parent commit and operations of an NDJSON commit payload."""
    title, parent, operations = "", None, []
    for line in body.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        key, value = item.get("key"), item.get("value", {})
        if key == "header":
            title, parent = value.get("summary", ""), value.get("parentCommit")
        elif key == "file" and value.get("encoding") == "base64":
            operations.append(FileOp(_check_path(value["path"]), base64.b64decode(value["content"])))
        elif key in ("deletedFile", "deletedFolder"):
            operations.append(FileOp(_check_path(value["path"]), is_folder=key == "deletedFolder"))
        elif key == "lfsFile":
            raise HubError(400, "LFS files are not supported by this local hub")
        else:
            raise HubError(400, f"Unsupported commit line: {key!r}")
    if not title:
        raise HubError(400, "A commit needs a summary")
    return title, parent, operations


def _commit(hub: LocalHub, req: Request) -> Response:
    """``POST .../commit/{branch}``: NDJSON header, inline files and deletions make one commit."""
    repo, branch = _writable_branch(hub, req)
    try:
        title, parent, operations = _parse_commit(req.body)
    except (KeyError, ValueError) as error:  # bad JSON or base64 are ValueErrors
        raise HubError(400, f"Malformed commit payload: {error}") from error
    commit = hub.state.commit(repo, branch, operations, title, parent)
    url = f"{hub.endpoint}/{repo.repo_id}/commit/{commit.oid}"
    return _json({"success": True, "commitOid": commit.oid, "commitUrl": url, "hookOutput": "", "pullRequestUrl": None})


def _create_branch(hub: LocalHub, req: Request) -> Response:
    """``POST .../branch/{branch}``: new branch at ``startingPoint`` or the head of ``main``."""
    repo = hub.state.writable(req.args["repo"], req.user)
    hub.state.create_branch(repo, req.args["branch"], req.json().get("startingPoint"))
    return _json({})


def _tree(hub: LocalHub, req: Request) -> Response:
    """``GET .../tree/{rev}[/{path}]``: one page listing files and folders."""
    commit = hub.state.readable(req.args["repo"], req.user).resolve(req.args["rev"])
    return _json(hub.state.tree(commit, req.args.get("path", "").strip("/"), req.flag("recursive")))


def _repo_info(hub: LocalHub, req: Request) -> Response:
    """``GET /api/models/{repo}[/revision/{rev}]``: id, sha, privacy and siblings (sizes with ``blobs``)."""
    repo = hub.state.readable(req.args["repo"], req.user)
    commit = repo.resolve(req.args.get("rev", "main"))
    siblings = [
        {"rfilename": path, **({"size": len(hub.state.blobs[oid]), "blobId": oid} if req.flag("blobs") else {})}
        for path, oid in sorted(commit.files.items())
    ]
    return _json(
        {
            "id": repo.repo_id,
            "author": repo.owner,
            "sha": commit.oid,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "createdAt": repo.created_at,
            "lastModified": commit.date,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "siblings": siblings,
        }
    )


def _resolve(hub: LocalHub, req: Request) -> Response:
    """``GET|HEAD /{repo}/resolve/{rev}/{path}``: the file, or a 307 pinning a branch to its commit."""
    repo = hub.state.readable(req.args["repo"], req.user)
    commit = repo.resolve(req.args["rev"])
    path = req.args["path"]
    headers = {"X-Repo-Commit": commit.oid}
    if path not in commit.files:
        raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers)
    if req.args["rev"] != commit.oid:
        headers["Location"] = f"/{repo.repo_id}/resolve/{commit.oid}/{quote(path)}"
        return Response(307, headers)
    oid = commit.files[path]
    headers.update({"ETag": f'"{oid}"', "Content-Type": "application/octet-stream"})
    return Response(200, headers, hub.state.blobs[oid])


def _error_response(error: HubError) -> Response:
    """The Hub's error shape: JSON ``{"error": ...}`` plus ``X-Error-Message`` / ``X-Error-Code`` headers."""
    headers = {"Content-Type": "application/json", "X-Error-Message": error.message.encode("ascii", "replace").decode()}
    if error.code:
        headers["X-Error-Code"] = error.code
    headers.update(error.headers)
    return Response(error.status, headers, json.dumps({"error": error.message, **error.details}).encode())


_ROUTES: list[tuple[tuple[str, ...], re.Pattern[str], Callable[[LocalHub, Request], Response]]] = [
    (("GET",), re.compile(r"/api/whoami-v2"), _whoami),
    (("POST",), re.compile(r"/api/repos/create"), _create_repo),
    (("POST",), re.compile(r"/api/validate-yaml"), _validate_yaml),
    (("POST",), re.compile(_API_REPO + r"/preupload/(?P<rev>[^/]+)"), _preupload),
    (("POST",), re.compile(_API_REPO + r"/commit/(?P<rev>[^/]+)"), _commit),
    (("POST",), re.compile(_API_REPO + r"/branch/(?P<branch>[^/]+)"), _create_branch),
    (("GET",), re.compile(_API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?"), _tree),
    (("GET",), re.compile(_API_REPO + r"(?:/revision/(?P<rev>[^/]+))?"), _repo_info),
    (("GET", "HEAD"), re.compile(_RESOLVE), _resolve),
]


class _Handler(BaseHTTPRequestHandler):
    """Routes each request to a handler and turns ``HubError`` into the Hub's error answer."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # drop idle keep-alive connections
    server: _HubServer

    def do_GET(self) -> None:
        """Serve a GET."""
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        """Serve a HEAD (headers of the GET, no body)."""
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        """Serve a POST."""
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        """Read the body, find the route, answer."""
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        hub = self.server.hub
        try:
            user = hub.state.user(self.headers.get("Authorization"))
            for methods, pattern, handler in _ROUTES:
                match = pattern.fullmatch(url.path)
                if match and method in methods:
                    args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    response = handler(hub, Request(args, parse_qs(url.query), body, user))
                    break
            else:
                raise HubError(404, f"No route for {method} {url.path}")
        except HubError as error:
            response = _error_response(error)
        except Exception as error:
            logger.exception("local hub: %s %s failed", method, self.path)
            response = _error_response(HubError(500, f"Internal error: {error!r}"))
        self._send(response, with_body=method != "HEAD")

    def _send(self, response: Response, with_body: bool) -> None:
        """Write status, headers (always with Content-Length) and, unless HEAD, the body."""
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.status >= 400:
            # Close after errors, so a body we did not understand cannot leak into the next request;
            # saying so lets the client drop the connection instead of reusing it.
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if with_body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Send the access log to ``logging`` at debug level instead of stderr."""
        logger.debug("local hub: " + format, *args)


class _HubServer(ThreadingHTTPServer):
    """A threaded HTTP server that knows its ``LocalHub``."""

    daemon_threads = True

    def __init__(self, hub: LocalHub):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub


class LocalHub:
    """A running local hub: ``endpoint`` for HF_ENDPOINT, ``state`` to inspect, ``root`` for client homes."""

    def __init__(self, root: Path, tokens: Mapping[str, str]):
        self.root = Path(root)
        self.state = HubState(tokens)
        self._server = _HubServer(self)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)

    def start(self) -> None:
        """Start serving in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@contextmanager
def running_local_hub(root: Path, tokens: Mapping[str, str]) -> Iterator[LocalHub]:
    """Run a ``LocalHub`` for the ``with`` block; ``tokens`` maps bearer tokens to user names.

    ``root`` (e.g. pytest's ``tmp_path``) holds the clients' fresh HF_HOME folders.
    """
    hub = LocalHub(root, tokens)
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


def client_env(hub: LocalHub, token: str | None) -> dict[str, str]:
    """A full environment for a client subprocess talking to ``hub`` as ``token`` (None: anonymous).

    Inherited HF_*/HUGGINGFACE_* variables are dropped so no outside token or cache leaks in;
    HF_HOME is a fresh folder under ``hub.root``; Xet is disabled so uploads take the inline path.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HF_", "HUGGINGFACE_")) and name not in ("TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE")
    }
    hub.root.mkdir(parents=True, exist_ok=True)
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HOME=tempfile.mkdtemp(prefix="hf_home_", dir=hub.root),
        HF_HUB_OFFLINE="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY=no_proxy,
        no_proxy=no_proxy,
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run_client(hub: LocalHub, token: str | None, code: str, timeout: float = 300) -> Any:
    """Run Python ``code`` in a fresh client subprocess and return the JSON its last stdout line holds.

    Raises ``RuntimeError`` with the subprocess's output if it exits non-zero.
    """
    result = subprocess.run(
        [sys.executable, "-c", code], env=client_env(hub, token), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(f"client failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])
