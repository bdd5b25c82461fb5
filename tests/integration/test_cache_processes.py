"""The SQLite embedding cache across real processes: several writers at once lose nothing and never
fail on a lock, a writer SIGKILLed in the middle of a batch loses that batch only (everything it
committed is there and right, the database opens and checks fine), and a fresh process refuses
rows damaged or moved by another program and reads back the rewritten ones."""
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "cd" * 32

WORKER = r"""
import json, sys, time, warnings
import numpy as np
from clipspace import cache
from clipspace.cache import VectorCache

root, job, first, count, batch, seconds = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6]), float(sys.argv[6])
store = VectorCache(sys.argv[7], 16, root)
keys = [f"{i:064x}" for i in range(first, first + count)]
cache.MEMORY_BYTES = 0  # nothing remembered: every get queries the database, as a fresh process would

def vector(key):  # each key's one right vector
    return np.random.default_rng(int(key, 16)).standard_normal(16).astype(np.float32)

seen = {"hit": 0, "miss": 0, "wrong": [], "batches": 0, "warnings": 0}
end = time.monotonic() + seconds
while True:
    for s in range(0, len(keys), batch):
        chunk = keys[s:s + batch]
        if job == "write":
            store.put_many((k, vector(k)) for k in chunk)
            seen["batches"] += 1
        elif job == "killme":  # prints each commit; stalls halfway through batch 3, inside its transaction
            def rows():
                for j, k in enumerate(chunk):
                    if s // batch == 3 and j == len(chunk) // 2:
                        print("MID", flush=True)
                        time.sleep(60)
                    yield k, vector(k)
            store.put_many(rows())
            print("COMMITTED", s + len(chunk), flush=True)
        else:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                for k, got in zip(chunk, store.get_many(chunk)):
                    if got is None:
                        seen["miss"] += 1
                    elif np.array_equal(got, vector(k)):
                        seen["hit"] += 1
                    else:
                        seen["wrong"].append(k)
            seen["warnings"] += len(w)
    if time.monotonic() > end:
        break
print(json.dumps(seen))
"""


def start(root, job, first=1, count=12, batch=4, seconds=0.0, namespace=NAMESPACE):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = [str(root), job, str(first), str(count), str(batch), str(seconds), namespace]
    return subprocess.Popen([sys.executable, "-c", WORKER, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def vector(key):
    return np.random.default_rng(int(key, 16)).standard_normal(16).astype(np.float32)


@pytest.fixture
def root(tmp_path):
    return tmp_path / "cache"


@contextlib.contextmanager
def database(root):
    con = sqlite3.connect(root / "vectors" / f"{NAMESPACE}.sqlite3", isolation_level=None)
    try:
        yield con
    finally:
        con.close()


def test_several_writers_at_once_lose_nothing_and_readers_never_get_a_wrong_vector(root):
    # four writers on overlapping key ranges (1-120, 61-180, ...), a batch of 10 per transaction,
    # for 2 s each, while a reader checks every vector it is served
    writers = [start(root, "write", first=1 + 60 * w, count=120, batch=10, seconds=2.0) for w in range(4)]
    reader = start(root, "read", first=1, count=300, batch=50, seconds=2.0)
    done = [finish(p) for p in writers]
    seen = finish(reader)
    assert all(d["batches"] >= 12 for d in done)  # each wrote its whole range at least once, no lock error
    assert seen["wrong"] == [] and seen["warnings"] == 0 and seen["hit"] > 0
    final = finish(start(root, "read", first=1, count=300, batch=100))
    assert final == {"hit": 300, "miss": 0, "wrong": [], "batches": 0, "warnings": 0}
    with database(root) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT count(*) FROM vectors").fetchone()[0] == 300


def test_a_writer_killed_mid_batch_loses_only_that_batch(root):
    proc = start(root, "killme", first=1, count=100, batch=10)
    committed = 0
    for line in proc.stdout:  # wait until it stalls inside batch 3's transaction, then SIGKILL it
        if line.startswith("COMMITTED"):
            committed = int(line.split()[1])
        if line.startswith("MID"):
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and committed == 30
    # a fresh process: the three committed batches are all there and right; the torn one is absent
    assert finish(start(root, "read", first=1, count=30, batch=10)) == \
        {"hit": 30, "miss": 0, "wrong": [], "batches": 0, "warnings": 0}
    assert finish(start(root, "read", first=31, count=70, batch=10))["miss"] == 70
    with database(root) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT count(*) FROM vectors").fetchone()[0] == 30
    finish(start(root, "write", first=1, count=100, batch=10))  # and it takes writes again
    assert finish(start(root, "read", first=1, count=100, batch=25))["hit"] == 100


def test_fresh_process_refuses_damaged_and_moved_rows_then_reads_the_rewritten_ones(root):
    finish(start(root, "write"))
    keys = [f"{i:064x}" for i in range(1, 13)]
    with database(root) as con:  # another program's edits, through sqlite3 itself
        con.execute("DELETE FROM vectors WHERE key = ?", (keys[0],))  # key 1's valid row under key 0
        con.execute("INSERT INTO vectors SELECT ?, dim, checksum, vector FROM vectors WHERE key = ?",
                    (keys[0], keys[1]))
        payload = bytearray(con.execute("SELECT vector FROM vectors WHERE key = ?", (keys[2],)).fetchone()[0])
        payload[-1] ^= 0x01  # one bit of the last float flipped
        con.execute("UPDATE vectors SET vector = ? WHERE key = ?", (bytes(payload), keys[2]))
    seen = finish(start(root, "read"))
    assert seen == {"hit": 10, "miss": 2, "wrong": [], "batches": 0, "warnings": 1}  # one warning per cache
    finish(start(root, "write"))  # a writer puts them right
    assert finish(start(root, "read"))["hit"] == 12


def test_a_forked_child_opens_its_own_connection(root):
    """A connection must never cross fork: the child of a process that used the cache reads and
    writes through its own, and the parent's keeps working."""
    import multiprocessing as mp

    from clipspace import cache
    from clipspace.cache import VectorCache

    store = VectorCache(NAMESPACE, 16, root)
    keys = [f"{i:064x}" for i in range(1, 5)]
    store.put_many((k, vector(k)) for k in keys[:2])
    ctx = mp.get_context("fork")
    child = ctx.Process(target=_child_writes, args=(str(root), keys[2:]))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    cache.clear_memory()
    got = store.get_many(keys)
    assert all(g is not None and np.array_equal(g, vector(k)) for g, k in zip(got, keys))
    store.put(keys[0], vector(keys[0]))


def _child_writes(root, keys):
    from clipspace import cache
    from clipspace.cache import VectorCache

    cache.clear_memory()
    store = VectorCache(NAMESPACE, 16, root)
    assert store.get_many(keys) == [None] * len(keys)
    assert store.count() == 2
    store.put_many((k, vector(k)) for k in keys)
