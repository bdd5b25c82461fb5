"""VectorCache on SQLite: round trips a batch at a time, damaged or misplaced rows are misses (and
are overwritten), the stated row format, old cache folders ignored; write_atomic, file_digest."""
import contextlib
import hashlib
import os
import sqlite3
import time
import warnings

import numpy as np
import pytest

from clipspace import cache
from clipspace.cache import VectorCache, describe_transform, digest, file_digest

NAMESPACE = "ab" * 32


@pytest.fixture(autouse=True)
def fresh_memory():
    cache.clear_memory()
    yield
    cache.clear_memory()


@pytest.fixture
def store(tmp_path):
    return VectorCache(NAMESPACE, dim=8, root=tmp_path)


def vectors(n, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return {f"{i:064x}": rng.standard_normal(dim).astype(np.float32) for i in range(n)}


@contextlib.contextmanager
def db(store):
    """The database file, opened with sqlite3 itself (autocommit), as another program would."""
    con = sqlite3.connect(store.path, isolation_level=None)
    try:
        yield con
    finally:
        con.close()


def test_round_trip_one_and_many(store):
    vs = vectors(5)
    keys = list(vs)
    assert store.get(keys[0]) is None and store.get_many(keys) == [None] * 5
    assert not store.path.exists()  # a lookup never creates the database
    assert store.put_many(vs.items()) == 5
    cache.clear_memory()  # read back from the database, not from this process's memory
    got = store.get_many([keys[3], "ff" * 32, keys[0], keys[3]])  # a miss and a key asked twice
    assert got[1] is None and all(g.dtype == np.float32 and not g.flags.writeable for g in (got[0], got[2]))
    assert np.array_equal(got[0], vs[keys[3]]) and np.array_equal(got[2], vs[keys[0]]) and got[3] is got[0]
    store.put(keys[0], vs[keys[1]])  # a put replaces
    cache.clear_memory()
    assert np.array_equal(store.get(keys[0]), vs[keys[1]]) and store.count() == 5
    with db(store) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] == cache.FORMAT


def test_many_keys_are_looked_up_past_sqlite_variable_limit(store):
    vs = vectors(1200, dim=8, seed=1)
    store.put_many(vs.items())
    cache.clear_memory()
    got = store.get_many(list(vs))
    assert all(np.array_equal(g, v) for g, v in zip(got, vs.values()))


def test_row_format_is_the_stated_one(store):
    key, v = next(iter(vectors(1).items()))
    store.put(key, v)
    with db(store) as con:
        ((k, dim, check, payload),) = con.execute("SELECT key, dim, checksum, vector FROM vectors").fetchall()
    assert (k, dim, payload) == (key, 8, v.astype("<f4").tobytes())
    h = hashlib.sha256()
    for part in (NAMESPACE.encode(), key.encode(), (8).to_bytes(8, "little"), payload):
        h.update(len(part).to_bytes(8, "little") + part)
    assert check == h.digest()


def damage(con, kind, key, other):
    if kind == "garble":  # one byte of the vector flipped
        payload = bytearray(con.execute("SELECT vector FROM vectors WHERE key = ?", (key,)).fetchone()[0])
        payload[5] ^= 0x10
        con.execute("UPDATE vectors SET vector = ? WHERE key = ?", (bytes(payload), key))
    elif kind == "truncate":
        con.execute("UPDATE vectors SET vector = substr(vector, 1, 20) WHERE key = ?", (key,))
    elif kind == "empty":
        con.execute("UPDATE vectors SET vector = x'' WHERE key = ?", (key,))
    elif kind == "checksum":
        con.execute("UPDATE vectors SET checksum = zeroblob(32) WHERE key = ?", (key,))
    elif kind == "other_key":  # another key's whole valid row under this key (a bad restore, a merge)
        con.execute("DELETE FROM vectors WHERE key = ?", (key,))
        con.execute("INSERT INTO vectors SELECT ?, dim, checksum, vector FROM vectors WHERE key = ?", (key, other))
    elif kind == "wrong_dim":  # a row valid for a vector of 9 values, checksum and all
        payload = np.zeros(9, "<f4").tobytes()
        con.execute("UPDATE vectors SET dim = 9, vector = ?, checksum = ? WHERE key = ?",
                    (payload, cache.checksum(NAMESPACE, key, 9, payload), key))
    elif kind == "text_payload":  # a type SQLite allows in any column
        con.execute("UPDATE vectors SET vector = 'abc' WHERE key = ?", (key,))


@pytest.mark.parametrize("kind", ["garble", "truncate", "empty", "checksum", "other_key", "wrong_dim", "text_payload"])
def test_damaged_or_misplaced_row_is_a_miss_warned_once_and_overwritten(store, kind):
    vs = vectors(3)
    a, b, c = vs
    store.put_many(vs.items())
    with db(store) as con:
        damage(con, kind, a, b)
        damage(con, kind, c, b)
    cache.clear_memory()  # as a new process finds it (this one remembers the vectors it wrote)
    with pytest.warns(UserWarning, match=r"2 damaged or misplaced row") as seen:
        got = store.get_many([a, b, c])
        assert store.get(a) is None  # still a miss, and no second warning from the same cache
    assert len(seen) == 1 and str(store.path) in str(seen[0].message)
    assert got[0] is None and got[2] is None and np.array_equal(got[1], vs[b])  # never served; b untouched
    store.put_many([(a, vs[a]), (c, vs[c])])  # what a caller does with a miss: recompute and put
    cache.clear_memory()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(np.array_equal(g, vs[k]) for g, k in zip(store.get_many([a, b, c]), (a, b, c)))


def test_a_database_of_another_space_is_never_served(tmp_path):
    vs = vectors(2)
    VectorCache("11" * 32, 8, tmp_path).put_many(vs.items())
    cache.close_all()  # the last connection checkpoints the WAL into the file, which is then renamed
    os.replace(tmp_path / "vectors" / f"{'11' * 32}.sqlite3", tmp_path / "vectors" / f"{'22' * 32}.sqlite3")
    cache.clear_memory()
    with pytest.warns(UserWarning, match="2 damaged or misplaced"):
        assert VectorCache("22" * 32, 8, tmp_path).get_many(list(vs)) == [None, None]


def test_a_file_that_is_not_a_database_is_misses_and_a_write_error(tmp_path):
    store = VectorCache(NAMESPACE, 8, tmp_path)
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"not a database at all" * 100)
    with pytest.warns(UserWarning, match="could not be read .*DatabaseError"):
        assert store.get_many(["aa" * 32]) == [None]
    with pytest.raises(sqlite3.DatabaseError):  # encode_images' writer turns this into one warning
        store.put("aa" * 32, np.zeros(8))


def test_put_many_is_all_or_nothing(store):
    vs = vectors(4)
    store.put_many(list(vs.items())[:1])

    def rows():  # the third row is bad: the transaction is rolled back, the first two are not kept
        items = list(vs.items())
        yield items[1]
        yield items[2]
        yield items[3][0], np.zeros(5)

    with pytest.raises(ValueError, match="has 5 values, this cache holds 8"):
        store.put_many(rows())
    cache.clear_memory()
    got = store.get_many(list(vs))
    assert np.array_equal(got[0], vs[next(iter(vs))]) and got[1:] == [None, None, None] and store.count() == 1


def test_old_one_file_per_vector_folders_are_ignored(tmp_path, store):
    """The layout before issue 18: <root>/<namespace>/<2 hex>/<key>.f32 holding sha256 + key + vector."""
    key, v = next(iter(vectors(1).items()))
    old = tmp_path / NAMESPACE / key[:2] / f"{key}.f32"
    old.parent.mkdir(parents=True)
    body = key.encode() + v.astype("<f4").tobytes()
    old.write_bytes(hashlib.sha256(body).digest() + body)  # a valid old file for this very key
    assert store.get(key) is None  # ignored, not read (and not misread as a database)
    assert cache.legacy_dirs(tmp_path) == [tmp_path / NAMESPACE]
    w = np.ones(8, np.float32)
    store.put(key, w)
    cache.clear_memory()
    assert np.array_equal(store.get(key), w) and old.read_bytes() == hashlib.sha256(body).digest() + body
    assert cache.legacy_dirs(tmp_path / "vectors") == []


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


def test_memory_is_bounded_and_read_only(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MEMORY_BYTES", 3 * 8 * 4)  # room for three vectors of 8 floats
    store = VectorCache(NAMESPACE, dim=8, root=tmp_path)
    vs = vectors(4)
    keys = list(vs)
    store.put_many(vs.items())
    assert len(cache._MEMORY) == 3 and (store._name, keys[0]) not in cache._MEMORY  # oldest dropped
    got = store.get(keys[3])
    assert np.array_equal(got, vs[keys[3]]) and not got.flags.writeable
    with db(store) as con:
        con.execute("DELETE FROM vectors WHERE key = ?", (keys[3],))
    assert np.array_equal(store.get(keys[3]), vs[keys[3]])  # remembered: no query
    assert np.array_equal(store.get(keys[0]), vs[keys[0]])  # from the database, then remembered again
    other = VectorCache(NAMESPACE, dim=8, root=tmp_path / "elsewhere")
    assert other.get(keys[3]) is None  # remembered per database, never across


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
