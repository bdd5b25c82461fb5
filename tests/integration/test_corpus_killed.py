"""A `clipspace embed` run SIGKILLed, then resumed: nothing committed is lost or rewritten, the torn
shard is never read, and the finished corpus equals an uninterrupted run's.

Two kills of a real child process: one in the middle of writing a shard (the child pauses itself
half-way through `pq.write_table`'s bytes, a hook on that call only, and is killed there: the
moment a crash tears a file), and one at whatever point the run has reached once its first shard
exists. The reference is an uninterrupted `embed` of the same folder in this process."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from clipspace import world
from clipspace.corpus import Corpus, embed, shards

REPO = Path(__file__).resolve().parents[2]
SHARD, BATCH = 8, 8

CHILD = r"""
import faulthandler, io, sys, time
faulthandler.dump_traceback_later(180, exit=True)  # a hung child ends (and says where) instead of the test
from pathlib import Path
import pyarrow.parquet as pq
from clipspace.corpus import embed, shards

folder, out, tear_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = [0]
write_table = pq.write_table

def torn(table, where, **kw):  # the tear_at-th shard: half its bytes reach the file, then a kill
    calls[0] += 1
    if calls[0] != tear_at:
        return write_table(table, where, **kw)
    buf = io.BytesIO()
    write_table(table, buf, **kw)
    where.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    where.flush()
    print("MIDWRITE", flush=True)
    time.sleep(600)

if tear_at:
    shards.pq.write_table = torn
embed(folder, out, shard_size=%d, batch_size=%d)
print("FINISHED", flush=True)
""" % (SHARD, BATCH)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    for i, s in enumerate(world.mixed_scenes(100)):
        s.render(48).save(d / f"w{i:03d}.png")
    (d / "empty.png").write_bytes(b"")  # a bad file: a row with its reason, before and after the kill
    return d


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "c"
    embed(folder, out, shard_size=SHARD, batch_size=BATCH)
    return pd.read_parquet(out).sort_values("path").reset_index(drop=True)


def child(folder, out, tear_at: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(out), str(tear_at)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def resume_and_check(folder, out: Path, reference: pd.DataFrame) -> None:
    survivors = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns, f.read_bytes()) for f in shards.list_shards(out)}
    committed = sum(pq.read_metadata(out / name).num_rows for name in survivors)
    again = embed(folder, out, shard_size=SHARD, batch_size=BATCH)  # not blocked: the kernel freed the lock
    assert again.skipped == committed and again.written == len(reference) - committed
    assert not list(out.glob(".tmp-*"))  # the torn file is gone, never read as a shard
    for f in shards.list_shards(out):
        if f.name in survivors:  # committed shards untouched: same file, same bytes
            assert (f.stat().st_ino, f.stat().st_mtime_ns, f.read_bytes()) == survivors[f.name]
    got = pd.read_parquet(out).sort_values("path").reset_index(drop=True)
    assert got["path"].is_unique and got["path"].tolist() == reference["path"].tolist()
    assert got["error"].fillna("").tolist() == reference["error"].fillna("").tolist()
    good = reference["error"].isna()
    np.testing.assert_allclose(np.stack(got["embedding"][good]), np.stack(reference["embedding"][good]),
                               atol=1e-6)  # other batch compositions: float rounding only
    assert len(Corpus.open(out)) == int(good.sum())


def test_killed_in_the_middle_of_writing_a_shard(folder, reference, tmp_path):
    out = tmp_path / "c"
    proc = child(folder, out, tear_at=3)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "MIDWRITE", proc.stderr.read()
        torn = list(out.glob(".tmp-part-*"))
        assert len(torn) == 1 and torn[0].stat().st_size > 0  # half a shard is on disk
        assert len(shards.list_shards(out)) == 2
    finally:
        kill(proc)
    resume_and_check(folder, out, reference)


def test_killed_wherever_the_run_has_got_to(folder, reference, tmp_path):
    out = tmp_path / "c"
    proc = child(folder, out, tear_at=0)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and shards.list_shards(out)):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no shard written in 120 s"
            time.sleep(0.005)
    finally:
        kill(proc)
    resume_and_check(folder, out, reference)
