"""The embedding cache across processes: what one process writes another reads back exactly, and a
file that is torn, or that holds another key's vector, is a miss in a fresh process, even while
other processes write, read and move files in the same folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

WORKER = r"""
import json, random, sys, time
import numpy as np
from clipspace import cache
from clipspace.cache import VectorCache, write_atomic

root, job, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = VectorCache("space", 16, root)
keys = [f"{i:064x}" for i in range(1, 13)]

def vector(key):  # each key's one right vector
    return np.random.default_rng(int(key, 16)).standard_normal(16).astype(np.float32)

end, seen = time.monotonic() + seconds, {"hit": 0, "miss": 0, "wrong": []}
cache.MEMORY_BYTES = 0  # nothing remembered: every get reads the file, as a fresh process would
while True:
    for key in keys:
        if job == "write":
            store.put(key, vector(key))
        elif job == "move":  # another key's valid file, atomically, where this key's should be
            other = random.choice(keys)
            try:
                write_atomic(store._path(key), store._path(other).read_bytes())
            except OSError:
                pass
        else:
            got = store.get(key)
            if got is None:
                seen["miss"] += 1
            elif np.array_equal(got, vector(key)):
                seen["hit"] += 1
            else:
                seen["wrong"].append(key)
    if time.monotonic() > end:
        break
print(json.dumps(seen))
"""


def start(root, job, seconds=0.0):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(root), job, str(seconds)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


@pytest.fixture
def root(tmp_path):
    return tmp_path / "cache"


def test_fresh_process_reads_back_and_refuses_moved_or_torn_files(root):
    finish(start(root, "write"))
    files = {p.stem: p for p in (root / "space").rglob("*.f32")}
    keys = sorted(files)
    assert len(keys) == 12
    files[keys[0]].write_bytes(files[keys[1]].read_bytes())  # key 1's valid file under key 0's name
    files[keys[2]].write_bytes(files[keys[2]].read_bytes()[:40])  # torn
    seen = finish(start(root, "read"))
    assert seen == {"hit": 10, "miss": 2, "wrong": []}
    finish(start(root, "write"))  # a writer puts them right
    assert finish(start(root, "read")) == {"hit": 12, "miss": 0, "wrong": []}


def test_readers_never_get_a_wrong_vector_while_others_write_and_move_files(root):
    finish(start(root, "write"))
    procs = [start(root, "write", 1.5), start(root, "write", 1.5), start(root, "move", 1.5)]
    reader = finish(start(root, "read", 1.5))
    for p in procs:
        finish(p)
    assert reader["wrong"] == [] and reader["hit"] > 0
    assert not list(root.rglob(".tmp-*"))  # every temporary file was renamed into place or removed
