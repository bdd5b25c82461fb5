"""VectorCache: round trip, torn or garbled files are misses, writes leave no temporary files."""
import hashlib
import os
import time

import numpy as np
import pytest

from clipspace import cache
from clipspace.cache import VectorCache, describe_transform, digest, file_digest


@pytest.fixture
def store(tmp_path):
    return VectorCache("space", dim=8, root=tmp_path)


def test_round_trip_and_miss(store, rng):
    v = rng.standard_normal(8).astype(np.float32)
    assert store.get("ab" * 32) is None
    store.put("ab" * 32, v)
    got = store.get("ab" * 32)
    assert got.dtype == np.float32 and np.array_equal(got, v)
    assert not list(store.dir.rglob(".tmp-*"))  # the temporary file was renamed into place


@pytest.mark.parametrize("damage", ["truncate", "garble", "empty", "wrong_length"])
def test_damaged_file_is_a_miss(store, rng, damage):
    key = "cd" * 32
    store.put(key, rng.standard_normal(8))
    path = next(store.dir.rglob("*.f32"))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 5]
    elif damage == "garble":
        data[40] ^= 0xFF
    elif damage == "empty":
        data = b""
    else:  # a valid file for a vector of another length
        body = key.encode() + np.zeros(9, "<f4").tobytes()
        data = hashlib.sha256(body).digest() + body
    path.write_bytes(bytes(data))
    cache.clear_memory()  # as a new process finds it (this one remembers the vector it wrote)
    assert store.get(key) is None


def test_file_holds_its_key_and_another_keys_file_is_a_miss(store, rng):
    a, b = "aa" * 32, "bb" * 32
    va, vb = rng.standard_normal(8).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    store.put(a, va)
    store.put(b, vb)
    path_a, path_b = store._path(a), store._path(b)
    data = path_b.read_bytes()
    path_a.write_bytes(data)  # b's valid file where a's should be (a sync tool, a copy, a bad restore)
    cache.clear_memory()
    assert store.get(a) is None and np.array_equal(store.get(b), vb)
    assert data[32:96] == b.encode() and hashlib.sha256(data[32:]).digest() == data[:32]  # the stated format
    store.put(a, va)  # a miss is recomputed and put: the file is a's again
    cache.clear_memory()
    assert np.array_equal(store.get(a), va)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSPACE_CACHE_DIR", str(tmp_path / "c"))
    assert cache.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CLIPSPACE_CACHE_DIR")
    assert cache.cache_dir() == cache.Path.home() / ".cache" / "clipspace"


def test_write_atomic_replaces_whole_files_and_leaves_nothing_on_failure(tmp_path):
    from clipspace.cache import write_atomic

    f = tmp_path / "sub" / "a.json"
    assert write_atomic(f, "héllo") == f and f.read_bytes() == "héllo".encode("utf-8")
    write_atomic(f, b"\x00\x01")
    assert f.read_bytes() == b"\x00\x01"
    assert oct(f.stat().st_mode & 0o777) == oct(0o666 & ~cache._UMASK)  # not mkstemp's 0600
    with pytest.raises(TypeError):
        write_atomic(f, 42)  # fails while writing: the old file stays, the temporary file goes
    assert f.read_bytes() == b"\x00\x01" and [p.name for p in f.parent.iterdir()] == ["a.json"]


def test_file_digest_is_sha256_and_follows_edits(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    assert file_digest(f) == hashlib.sha256(b"hello").hexdigest()
    f.write_bytes(b"hello, world")
    os.utime(f, ns=(1, 1))  # a new mtime and size: the memo must not answer with the old digest
    assert file_digest(f) == hashlib.sha256(b"hello, world").hexdigest()


def test_digest_separates_parts_and_transform_repr_drops_addresses():
    assert digest("ab", "c") != digest("a", "bc")
    def f(): pass
    assert "0x" not in describe_transform([f]) and "function" in describe_transform([f])


def test_memory_is_bounded_and_read_only(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(cache, "MEMORY_BYTES", 3 * 8 * 4)  # room for three vectors of 8 floats
    cache.clear_memory()
    store = VectorCache("space", dim=8, root=tmp_path)
    vs = {f"{i:02d}" * 32: rng.standard_normal(8).astype(np.float32) for i in range(4)}
    for k, v in vs.items():
        store.put(k, v)
    assert len(cache._MEMORY) == 3 and (store._folder, "00" * 32) not in cache._MEMORY  # oldest dropped
    got = store.get("03" * 32)
    assert np.array_equal(got, vs["03" * 32]) and not got.flags.writeable
    assert np.array_equal(store.get("00" * 32), vs["00" * 32])  # from its file, then remembered again
    other = VectorCache("space", dim=8, root=tmp_path / "elsewhere")
    assert other.get("03" * 32) is None  # remembered per cache folder, never across
    cache.clear_memory()


def test_file_digest_sees_a_rewrite_that_keeps_size_and_mtime(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    before = os.stat(f)
    assert file_digest(f) == hashlib.sha256(b"hello").hexdigest()
    time.sleep(0.05)  # past the clock tick of the first write: the rewrite gets a new ctime
    f.write_bytes(b"HELLO")
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back, as copy tools do
    after = os.stat(f)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert file_digest(f) == hashlib.sha256(b"HELLO").hexdigest()
