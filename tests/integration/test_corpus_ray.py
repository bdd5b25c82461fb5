"""The Ray engine on a REAL local Ray cluster (no mocks): ~200 world images plus the odd and bad
files give the local engine's rows, every path once, the same reasons; a resumed run after lost
shards writes only those rows, through Ray's own reader (reader="binary", read_binary_files).

One subprocess for the module is the Ray driver: it starts its own local Ray in-process through
clipspace's `start_ray` (`ray.init(address="local", num_cpus=4)` on 2 cores: the deadlock notes in
docs/corpus.md), runs two jobs on it (a fresh run with the default reader="paths", then a resume
with reader="binary") and writes their reports to a JSON; every check runs here, against the
local engine run in this process. Nothing is shared with another Ray on the machine: the driver's
Ray lives in its own temp folder (RAY_TMPDIR) and its own process session, killed as a whole at
the end. Two jobs, not more: each costs ~15-35 s of actor start-up (every actor imports torch and
open_clip), whatever its row count.

The known deadlocks hang Ray Data's stream forever, so each phase of the driver runs under a
watchdog (`faulthandler.dump_traceback_later(exit=True)`: the driver's stack is printed, then it
exits) and the whole subprocess under a hard timeout: a hang fails the test, it never hangs CI.
About 60 s on 2 quiet cores (Ray start-up ~10 s, each job ~20 s), up to ~2 min with both busy.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("ray")

from tests.unit.test_corpus import BAD, expected_reason, make_images  # noqa: E402

from clipspace.corpus import embed, shards  # noqa: E402
from clipspace.images import list_images  # noqa: E402

PHASE_TIMEOUT = 240  # s; a healthy phase takes 10-30 s here, 2-3x that with both cores busy
TOTAL_TIMEOUT = 480  # s; the backstop, should the watchdog itself not fire
JOB = dict(shard_size=50, batch_size=16)
LOSE = (0, -1)  # the shards deleted before the resume: the first (every odd and bad file) and the last

DRIVER = r'''
import faulthandler, json, shutil, sys, time
from pathlib import Path

cfg = json.loads(Path(sys.argv[1]).read_text())
out = {"phases": {}}


def phase(name, fn):
    faulthandler.dump_traceback_later(cfg["phase_timeout"], exit=True)  # a hang: print the stack, exit 1
    print(f"PHASE {name}", flush=True)
    t0 = time.perf_counter()
    value = fn()
    out["phases"][name] = round(time.perf_counter() - t0, 2)
    faulthandler.cancel_dump_traceback_later()
    return value


def report(r):
    return {"written": r.written, "failed": r.failed, "skipped": r.skipped, "total": r.total,
            "shards": [p.name for p in r.shards]}


def lose_shards(corpus):
    """Delete cfg["lose"] shards and leave what a killed writer leaves; returns the paths lost."""
    import pyarrow.parquet as pq
    from clipspace.corpus import shards
    files = shards.list_shards(corpus)
    lost = [files[i] for i in cfg["lose"]]
    paths = [p for f in lost for p in pq.read_table(f, columns=["path"]).column("path").to_pylist()]
    for f in lost:
        f.unlink()
    (corpus / ".tmp-part-0001-000099.parquet.k").write_bytes(b"PAR1 torn")
    return {"shards": [f.name for f in lost], "paths": paths}


import ray
from clipspace.corpus import embed
from clipspace.corpus.ray_engine import start_ray

out["started"] = phase("start", start_ray)
out["cpus"] = ray.cluster_resources().get("CPU")
root, folder, job = Path(cfg["root"]), cfg["folder"], cfg["job"]
out["fresh"] = report(phase("fresh", lambda: embed(folder, root / "fresh", engine="ray", **job)))
shutil.copytree(root / "fresh", root / "resume")
out["lost"] = lose_shards(root / "resume")
out["resume"] = report(phase("resume", lambda: embed(folder, root / "resume", engine="ray", reader="binary", **job)))
phase("shutdown", ray.shutdown)
Path(cfg["results"]).write_text(json.dumps(out))
print("DONE", json.dumps(out["phases"]), flush=True)
'''


def _session_pids(sid: int) -> set[int]:
    """The processes of session `sid` (Linux /proc; empty elsewhere, where killpg below does what it can)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp session
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.add(int(stat.parent.name))
    return pids


def _kill_session(proc):
    """SIGKILL every process of the driver's session (it is the session leader: start_new_session),
    and wait until they are gone. Ray's raylet and stores are in the driver's process group, but
    its workers each get a process group of their own (and outlive a killed raylet for a while),
    so they are found by session."""
    for _ in range(50):
        pids = _session_pids(proc.pid) | ({proc.pid} if proc.poll() is None else set())
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("ray-imgs"), 200)


@pytest.fixture(scope="module")
def local(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "c"
    embed(folder, out, **JOB)
    return pd.read_parquet(out).set_index("path")


@pytest.fixture(scope="module")
def ray_runs(folder, tmp_path_factory):
    """Runs DRIVER; returns (its results dict, the folder holding fresh/ and resume/)."""
    root = tmp_path_factory.mktemp("ray")
    cfg = {"root": str(root), "folder": str(folder), "job": JOB, "lose": list(LOSE),
           "phase_timeout": PHASE_TIMEOUT, "results": str(root / "results.json")}
    (root / "config.json").write_text(json.dumps(cfg))
    # a short temp folder: Ray's unix sockets live under it and must stay within ~107 characters
    ray_tmp = tempfile.mkdtemp(prefix="csray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)  # a fresh local Ray, whatever the calling shell points at
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(root / "config.json")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    why = None
    try:
        try:
            stdout, stderr = proc.communicate(timeout=TOTAL_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_session(proc)
            stdout, stderr = proc.communicate()
            why = f"did not finish in {TOTAL_TIMEOUT} s (a deadlock?)"
        _kill_session(proc)  # nothing of this Ray outlives the test, even after a watchdog exit
        if why is None and (proc.returncode != 0 or not (root / "results.json").is_file()):
            hung = "Timeout (" in stderr  # faulthandler's watchdog fired
            why = (f"hung (no progress in {PHASE_TIMEOUT} s: a deadlock?)" if hung else "failed") + \
                f", exit {proc.returncode}"
        if why:
            phases = [ln for ln in stdout.splitlines() if ln.startswith("PHASE")]
            raylet = sorted(Path(ray_tmp).glob("ray/session_*/logs/raylet.err"))  # where a start-up abort says why
            tail = raylet[-1].read_text(errors="replace")[-1500:] if raylet else ""
            pytest.fail(f"the Ray driver {why} in {phases[-1:]}:\n{stdout[-2000:]}\n{stderr[-6000:]}\n"
                        f"raylet.err: {tail}")
    finally:
        _kill_session(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    results = json.loads((root / "results.json").read_text())
    print("Ray driver phases (s):", results["phases"])
    return results, root


def same_rows(df: pd.DataFrame, local: pd.DataFrame):
    """Every path exactly once, the same reasons, the same embeddings (to float rounding)."""
    assert df["path"].is_unique and sorted(df["path"]) == sorted(local.index)
    df = df.set_index("path").loc[local.index]
    assert df["error"].fillna("").tolist() == local["error"].fillna("").tolist()
    good = local["error"].isna()
    np.testing.assert_allclose(np.stack(df["embedding"][good].to_list()), np.stack(local["embedding"][good].to_list()),
                               atol=1e-6)  # other batches than the local run's: float rounding only


def test_a_local_ray_started_with_room_for_the_readers(ray_runs):
    results, _ = ray_runs
    assert results["started"] is True  # start_ray made its own local Ray (none was attached to)
    assert results["cpus"] >= 4  # 2 logical CPUs a core: actors at 1 CPU leave half for the read tasks


def test_ray_rows_equal_the_local_engine(folder, ray_runs, local):
    results, root = ray_runs
    listed = [os.path.abspath(p) for p in list_images(folder)]
    assert len(listed) > 200
    report = results["fresh"]
    assert report["written"] == report["total"] == len(listed) and report["skipped"] == 0
    assert report["failed"] == len(BAD)
    df = pd.read_parquet(root / "fresh")
    same_rows(df, local)
    reasons = dict(zip(df["path"], df["error"]))
    for path in listed:
        name = os.path.basename(path)
        if name in BAD:
            assert reasons[path] == expected_reason(path) and BAD[name] in reasons[path]
        else:
            assert pd.isna(reasons[path]), (path, reasons[path])


def test_ray_resume_writes_only_the_missing_rows(ray_runs, local):
    """After two lost shards and a torn temporary file, a rerun writes exactly the lost rows as new
    shards, leaves every surviving shard untouched, and the corpus equals the local engine's again.
    The rerun uses reader="binary" (Ray's read_binary_files fetches the bytes, the actors decode
    them), so the lost rows, which hold every odd and bad file, also check that reader: the
    dangling symlink, which Ray's listing drops, comes back as a row with clipspace's reason."""
    results, root = ray_runs
    out, lost, report = root / "resume", results["lost"]["paths"], results["resume"]
    assert {os.path.basename(p) for p in lost} >= set(BAD)  # the bad files are among the lost rows
    assert report["written"] == len(lost) and report["skipped"] == len(local) - len(lost)
    assert report["failed"] == len(BAD)
    assert not list(out.glob(".tmp-*"))  # the torn file a killed writer left is gone
    files = shards.list_shards(out)
    new = [f for f in files if f.name.startswith("part-0002-")]
    assert new and sorted(f.name for f in new) == sorted(report["shards"])
    assert sorted(pd.concat([pd.read_parquet(f, columns=["path"]) for f in new])["path"]) == sorted(lost)
    for f in files:  # the survivors: byte for byte the fresh run's shards
        if f not in new:
            assert f.read_bytes() == (root / "fresh" / f.name).read_bytes(), f.name
    same_rows(pd.read_parquet(out), local)
