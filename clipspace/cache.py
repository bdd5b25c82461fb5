"""The embedding cache: one SQLite database per embedding space, every vector stored with its key
and a checksum, plus a bounded in-process memory of the vectors read or written.

Keys hash everything that changes a vector: the model (name, weights_id, parameter dtype), how its
input is prepared (preprocess repr for images, tokenizer for texts), the precision it ran at when
not float32, and the input itself (sha256 of a file's bytes, or of an in-memory image's pixels, or
the text). `clipspace.embedding` folds the model and preparation into the *namespace* (one database
file, `<cache_dir>/vectors/<namespace>.sqlite3`) and the input into the *key* (one row). The
device is left out: CPU and GPU agree to float32 rounding. A model whose weights change in memory
(training) keeps its weights_id, so do not cache through one; a ClipModel with an empty weights_id
is never cached.

Why SQLite: it is the most tested embedded database there is, in the standard library, and one
file per space replaces the million small files (and their folders) of the old layout.
- WAL mode: readers never block the writer nor see half a transaction; a writer killed mid-batch
  loses that batch's uncommitted rows only (rolled back by the next opener) and nothing committed.
  `synchronous=NORMAL`: committed transactions survive a crash of the process (the case that
  matters for a cache); a power cut may lose the last few commits, never the database's integrity.
- Batched: `get_many` looks a whole batch up in one query, `put_many` writes a batch in one
  transaction (`BEGIN IMMEDIATE`, so two writers queue instead of deadlocking on a lock upgrade).
- Several processes: each waits for the other's write lock (`busy_timeout`, BUSY_TIMEOUT_S), and a
  lock error that still comes through (SQLITE_BUSY cases where SQLite calls no busy handler) is
  retried with a backoff (RETRIES times) before it is raised.
- One connection per database per process, shared by its threads under a lock (a batch at a time,
  so the lock is never contended for long). A forked child opens its own and never touches, nor
  closes, the one it inherited (SQLite forbids using a connection across fork).

Row format, so that a damaged or misplaced row is detected and recomputed, never returned:
`(key TEXT PRIMARY KEY, dim INTEGER, checksum BLOB, vector BLOB)`, vector = `dim` float32
little-endian values, checksum = sha256 over the length-prefixed (8-byte little-endian length, then
the bytes) parts `namespace` (UTF-8), `key` (UTF-8), `dim` (8-byte little-endian) and the vector's
bytes. A row whose checksum, dim or length disagrees (garbled bytes, a row copied under another key,
a database file renamed to another space's name, a vector of another length) is a miss: a warning
(once per VectorCache) names the database, and the caller's recomputed vector overwrites the row.

Existing cache directories of the old layout (`<cache_dir>/<namespace>/<2 hex>/<key>.f32`, one
file per vector, clipspace before issue 18) are IGNORED, never read nor migrated: the new databases
live under `<cache_dir>/vectors/`, a path the old layout never used, so no old file can be misread
as a new entry; their vectors are recomputed once. `legacy_dirs()` lists the old folders so that
they can be deleted to reclaim the space. (Migration was not worth its risk: re-embedding is
exactly right by construction, and the old files are recomputed at the speed of a first run.)

In-process memory: every vector read or written is also kept in a bounded dict (`MEMORY_BYTES`),
keyed by (database, key), so a rerun in the same session costs a dict lookup per input, not a query
and a checksum. `clear_memory()` forgets it and the file-digest memo, as a new process would.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import sqlite3
import sys
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

_DIGESTS: dict[tuple, str] = {}  # (path, device, inode, mtime_ns, ctime_ns, size) -> sha256, per process
MEMORY_BYTES = 256 * 2 ** 20  # vectors kept in memory per process (least recently used dropped first)
_MEMORY: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # (database, key) -> read-only vector
_memory_used = 0
_LOCK = threading.Lock()  # the memory is shared by the threads that read images

BUSY_TIMEOUT_S = 60.0  # how long one statement waits for another process's write lock
RETRIES = 8  # lock errors retried (with backoff) after the busy timeout, before they are raised
FORMAT = 1  # PRAGMA user_version of the databases this code writes
_IN_CLAUSE = 500  # keys per SELECT ... IN (...): under every SQLite build's variable limit (999)


def clear_memory(vectors: bool = True, digests: bool = True) -> None:
    """Forget the vectors and/or file digests kept in this process (the databases on disk stay)."""
    global _memory_used
    with _LOCK:
        if vectors:
            _MEMORY.clear()
            _memory_used = 0
        if digests:
            _DIGESTS.clear()


def _remember(key: tuple[str, str], vector: np.ndarray) -> None:
    global _memory_used
    with _LOCK:
        if key in _MEMORY:
            _MEMORY.move_to_end(key)
            if np.array_equal(_MEMORY[key], vector):
                return
            _memory_used -= _MEMORY.pop(key).nbytes  # overwritten: the new vector is the one on disk
        vector.setflags(write=False)  # shared by every caller that gets it back
        _MEMORY[key] = vector
        _memory_used += vector.nbytes
        while _memory_used > MEMORY_BYTES and _MEMORY:
            _memory_used -= _MEMORY.popitem(last=False)[1].nbytes


def warn_user(message: str) -> None:
    """warnings.warn, pointing at the user's line rather than at a clipspace frame."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("clipspace."):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, stacklevel=level)


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and os.replace, so a
    reader sees the old file or the new one, never half of one. Text is written as UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def cache_dir() -> Path:
    """CLIPSPACE_CACHE_DIR if set, else ~/.cache/clipspace."""
    return Path(os.environ.get("CLIPSPACE_CACHE_DIR") or Path.home() / ".cache" / "clipspace").expanduser()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, computed once per (path, device, inode, mtime, ctime, size) in this
    process. ctime is in the key because a rewrite can keep size and mtime (os.utime sets mtime
    back) but always moves ctime, which no call can set."""
    path = os.path.abspath(path)  # not resolve(): one lstat per folder level, per file, per call
    st = os.stat(path)
    key = (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def digest(*parts) -> str:
    """sha256 over the reprs of `parts` (bytes are hashed as they are)."""
    h = hashlib.sha256()
    for p in parts:
        b = p if isinstance(p, bytes) else repr(p).encode()
        h.update(len(b).to_bytes(8, "little") + b)  # length-prefixed: ("ab", "c") != ("a", "bc")
    return h.hexdigest()


def describe_transform(transform) -> str:
    """repr of a transform without memory addresses (`<function f at 0x7f..>` differs per process)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


def legacy_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """Folders of the old one-file-per-vector layout under `root` (default `cache_dir()`): 64-hex
    names holding `<2 hex>/<key>.f32` files. The cache ignores them; delete them to free the space."""
    root = Path(root or cache_dir())
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if re.fullmatch(r"[0-9a-f]{64}", d.name) and d.is_dir()
                  and next(d.glob("[0-9a-f][0-9a-f]/*.f32"), None) is not None)


def checksum(namespace: str, key: str, dim: int, payload: bytes) -> bytes:
    """The checksum stored with each row (see the module docstring for the format)."""
    h = hashlib.sha256()
    for part in (namespace.encode(), key.encode(), int(dim).to_bytes(8, "little"), payload):
        h.update(len(part).to_bytes(8, "little") + part)
    return h.digest()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    key TEXT PRIMARY KEY NOT NULL,
    dim INTEGER NOT NULL,
    checksum BLOB NOT NULL,
    vector BLOB NOT NULL
);
"""
_CONNECTIONS: dict[str, tuple[int, sqlite3.Connection, threading.Lock]] = {}  # database -> (pid, conn, lock)
_INHERITED: list = []  # connections a forked child found: kept referenced, never used nor closed
_CONNECTING = threading.Lock()


def _is_busy(e: Exception) -> bool:
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


def _retry(fn):
    """fn(), retried with a growing, jittered sleep on SQLITE_BUSY / SQLITE_LOCKED."""
    for attempt in range(RETRIES + 1):
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not _is_busy(e) or attempt == RETRIES:
                raise
            time.sleep(min(2.0, 0.01 * 2 ** attempt) * (0.5 + random.random()))


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; put_many says BEGIN IMMEDIATE / COMMIT itself
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    try:
        _retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchall())  # persistent: set once per file
        conn.execute("PRAGMA synchronous=NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, FORMAT):
            raise sqlite3.DatabaseError(f"format {version}, this clipspace reads format {FORMAT}")
        if version == 0:
            def create():
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(_SCHEMA)
                    conn.execute(f"PRAGMA user_version={FORMAT}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            _retry(create)
    except BaseException:
        conn.close()
        raise
    return conn


def _connection(path: Path, create: bool):
    """(connection, lock) for the database at `path`, opened once per process; None when it does
    not exist and `create` is false (a lookup never creates a file)."""
    name = str(path)
    with _CONNECTING:
        held = _CONNECTIONS.get(name)
        if held is not None and held[0] != os.getpid():  # inherited through fork: never use it
            _INHERITED.append(_CONNECTIONS.pop(name))
            held = None
        if held is None:
            if not create and not path.exists():
                return None
            held = _CONNECTIONS[name] = (os.getpid(), _open(path), threading.Lock())
    return held[1], held[2]


def close_all() -> None:
    """Close this process's cache connections (they reopen on the next use)."""
    with _CONNECTING:
        for name in list(_CONNECTIONS):
            pid, conn, _ = _CONNECTIONS.pop(name)
            if pid == os.getpid():
                conn.close()


class VectorCache:
    """Vectors of one length in the SQLite database `root/vectors/<namespace>.sqlite3`, each row
    with its key and a checksum (module docstring). `get_many` / `put_many` do a batch at a time."""

    def __init__(self, namespace: str, dim: int, root: str | os.PathLike | None = None):
        self.namespace = namespace
        self.dim = int(dim)
        self.path = Path(root or cache_dir()) / "vectors" / f"{namespace}.sqlite3"
        self.dir = self.path.parent
        self._name = str(self.path)
        self._warned = False

    # --- reading ---------------------------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """The stored vector (read-only) for each key, or None where it is absent or its row fails
        the checks (checksum, dim, length): one query per 500 keys, after the in-process memory."""
        out: list[np.ndarray | None] = [None] * len(keys)
        todo: dict[str, list[int]] = {}
        with _LOCK:
            for i, key in enumerate(keys):
                hit = _MEMORY.get((self._name, key))
                if hit is not None and len(hit) == self.dim:
                    _MEMORY.move_to_end((self._name, key))
                    out[i] = hit
                else:
                    todo.setdefault(key, []).append(i)
        if not todo:
            return out
        rows, bad = self._select(list(todo)), []
        for key, dim, stored, payload in rows:
            if key not in todo:
                continue
            if (dim != self.dim or not isinstance(payload, bytes) or len(payload) != 4 * self.dim
                    or stored != checksum(self.namespace, key, dim, payload)):
                bad.append(key)
                continue
            vector = np.frombuffer(payload, dtype="<f4").astype(np.float32)
            _remember((self._name, key), vector)
            for i in todo[key]:
                out[i] = vector
        if bad:
            self._warn_once(f"{len(bad)} damaged or misplaced row(s) (checksum, key or length wrong) were "
                            "ignored and are being recomputed")
        return out

    def _select(self, keys: list[str]) -> list[tuple]:
        try:
            held = _connection(self.path, create=False)
            if held is None:
                return []
            conn, lock = held
            rows = []
            for s in range(0, len(keys), _IN_CLAUSE):
                chunk = keys[s:s + _IN_CLAUSE]
                sql = f"SELECT key, dim, checksum, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})"
                with lock:
                    rows += _retry(lambda: conn.execute(sql, chunk).fetchall())
            return rows
        except (sqlite3.Error, OSError) as e:  # unreadable or not a database: misses, never a crash
            self._warn_once(f"could not be read ({type(e).__name__}: {e}); every vector is recomputed")
            return []

    def get(self, key: str) -> np.ndarray | None:
        return self.get_many([key])[0]

    # --- writing ---------------------------------------------------------------------------------
    def put_many(self, items: Iterable[tuple[str, np.ndarray]]) -> int:
        """Store (key, vector) pairs in one transaction (all of them or, if the process dies or an
        error is raised, none); an existing row of the same key is replaced. `items` may be a
        generator: it is consumed inside the transaction. Returns the number of rows written.
        Raises OSError or sqlite3.Error when the database cannot be written."""
        written: list[tuple[str, np.ndarray]] = []

        def rows():
            for key, vector in items:
                v = np.ascontiguousarray(vector, dtype="<f4").reshape(-1)
                if len(v) != self.dim:
                    raise ValueError(f"vector for key {key!r} has {len(v)} values, this cache holds {self.dim}")
                payload = v.tobytes()
                written.append((key, np.frombuffer(payload, dtype="<f4").astype(np.float32)))
                yield key, self.dim, checksum(self.namespace, key, self.dim, payload), payload

        conn, lock = _connection(self.path, create=True)
        with lock:
            _retry(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                conn.executemany("INSERT OR REPLACE INTO vectors (key, dim, checksum, vector) VALUES (?, ?, ?, ?)",
                                 rows())
                _retry(lambda: conn.execute("COMMIT"))
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        for key, vector in written:  # remembered once committed, not before
            _remember((self._name, key), vector)
        return len(written)

    def put(self, key: str, vector: np.ndarray) -> None:
        self.put_many([(key, vector)])

    def count(self) -> int:
        """Rows in the database (damaged ones included). Not __len__: an empty cache is still a cache."""
        held = _connection(self.path, create=False)
        if held is None:
            return 0
        conn, lock = held
        with lock:
            return _retry(lambda: conn.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def _warn_once(self, what: str) -> None:
        if not self._warned:
            self._warned = True
            warn_user(f"embedding cache {self.path}: {what}")
