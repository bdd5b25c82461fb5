"""An on-disk cache of embedding vectors, one small file per input.

Keys hash everything that changes a vector: the model (name, weights_id, parameter dtype), how its
input is prepared (preprocess repr for images, tokenizer for texts) and the input itself (sha256 of
a file's bytes, or of an in-memory image's pixels, or the text). The device is left out: CPU and
GPU agree to float32 rounding. A model whose weights change in memory (training) keeps its
weights_id, so do not cache through one; a ClipModel with an empty weights_id is never cached.

File format, so that a torn, garbled or misplaced file is detected and recomputed, never returned:
32 bytes sha256 of key + payload, the key (UTF-8), then the payload (float32 little-endian vector).
The key is checked too: a file copied or renamed over another key's is a miss, not a wrong vector.
Writes go to a temporary file in the same folder, then os.replace, so readers never see half a file.

In-process memory: every vector read or written is also kept in a bounded dict (`MEMORY_BYTES`),
keyed like its file, so a rerun in the same session costs a dict lookup per input, not a file read
and a checksum. `clear_memory()` forgets it and the file-digest memo, as a new process would.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

_DIGESTS: dict[tuple, str] = {}  # (path, device, inode, mtime_ns, ctime_ns, size) -> sha256, per process
MEMORY_BYTES = 256 * 2 ** 20  # vectors kept in memory per process (least recently used dropped first)
_MEMORY: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # (folder, key) -> read-only vector
_memory_used = 0
_LOCK = threading.Lock()  # the memory is shared by the threads that read images


def clear_memory(vectors: bool = True, digests: bool = True) -> None:
    """Forget the vectors and/or file digests kept in this process (the files on disk stay)."""
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
            return
        vector.setflags(write=False)  # shared by every caller that gets it back
        _MEMORY[key] = vector
        _memory_used += vector.nbytes
        while _memory_used > MEMORY_BYTES and _MEMORY:
            _memory_used -= _MEMORY.popitem(last=False)[1].nbytes


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


class VectorCache:
    """Vectors of one length under `root/namespace/`, stored with their key and a checksum."""

    def __init__(self, namespace: str, dim: int, root: str | os.PathLike | None = None):
        self.dir = Path(root or cache_dir()) / namespace
        self.dim = dim
        self._folder = str(self.dir)

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.f32"

    def get(self, key: str) -> np.ndarray | None:
        """The stored vector (read-only), or None when absent, torn, garbled, of the wrong length or
        stored under another key."""
        with _LOCK:
            hit = _MEMORY.get((self._folder, key))
            if hit is not None and len(hit) == self.dim:
                _MEMORY.move_to_end((self._folder, key))
                return hit
        try:
            data = self._path(key).read_bytes()
        except OSError:
            return None
        body, n = data[32:], 4 * self.dim
        if len(body) < n or body[:-n] != key.encode() or hashlib.sha256(body).digest() != data[:32]:
            return None
        vector = np.frombuffer(body[-n:], dtype="<f4").astype(np.float32)
        _remember((self._folder, key), vector)
        return vector

    def put(self, key: str, vector: np.ndarray) -> None:
        payload = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        body = key.encode() + payload
        write_atomic(self._path(key), hashlib.sha256(body).digest() + body)
        _remember((self._folder, key), np.frombuffer(payload, dtype="<f4").astype(np.float32))
