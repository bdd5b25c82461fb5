"""The Ray engine: Ray Data streams the paths through an actor pool of clipspace models.

Pipeline (one Ray Data dataset, streamed, never materialised whole):

    from_items(paths)                           # reader="paths" (default): the actors read the files
      or read_binary_files(paths, include_paths=True)   # reader="binary": Ray's readers fetch bytes
    .map_batches(_EmbedBatch, compute=ActorPoolStrategy(size=num_actors), batch_size=batch_size,
                 num_cpus=actor_cpus, num_gpus=actor_gpus)
    .iter_batches(batch_size=shard_size)        # back on the driver, each written as one parquet shard

Each actor loads the model once, by name (`model_spec.ModelSpec.load`: never a pickled model), and
embeds its batch with clipspace's own code: reader="paths" calls `encode_images(strict=False)` on
the batch's paths (files read by `read_image_file`, decoded by `decode_image`: errors and pixels
are the local engine's by construction, and an unreadable file is a row, not a failed task);
reader="binary" decodes Ray's bytes with `decode_image`. Ray's reader runs with
`ignore_missing_paths=True`, so a path it finds no file at (a dangling symlink, a file deleted
since the listing) is left out of its stream instead of failing the job; such paths (and a folder
named in a list, which Ray would expand into its files) come back as rows at the end, with the
reason clipspace's own `read_image_file` gives on the driver. A file Ray finds but cannot read
(permission denied) still fails its read task and the job: use reader="binary" for object stores
and clean lists, the default for a messy folder.

Deadlocks seen on 2 cores (docs/corpus.md): actors holding every logical CPU leave the read and
split tasks a budget of 0 and the stream stalls forever. So a local Ray started here gets twice as
many logical CPUs as cores (at least 4) and actors ask for 1 each, one actor per core: half the
budget stays for the tasks that feed them. Enough blocks (4 per actor) that every actor gets work.
On a cluster (`address=`) actors default to one per two logical CPUs, again leaving half the CPU
budget free; pass num_actors / actor_cpus / actor_gpus to fit the nodes.

A local Ray is always a new one (`ray.init(address="local")`): plain `ray.init()` would attach to
whatever `ray start` cluster last wrote /tmp/ray/ray_current_cluster on this machine (and then
refuse `num_cpus`). RAY_ADDRESS, Ray's own variable, still selects a cluster when no address is
given. On a loaded machine the raylet can abort at start-up (its dashboard agent missed the
raylet's port-file wait): a local start is tried twice before the error is raised.

What runs per node, and where it stops scaling (on paper, not measured on a cluster):
- per node: `num_actors / nodes` actors, each one torch model with `max(1, actor_cpus)` threads
  (or its GPU share), reading and decoding its own files on a few threads (`encode_images`'
  read-ahead) one batch ahead of the model. So a node's throughput is min(its disk or network
  reads, its decode rate ~ cores x a few hundred small JPEGs/s with PIL, its model rate).
- the driver: holds the path list (from_items materialises it: ~100 bytes a path, so 10M paths is
  ~1 GB of driver memory; for more, split the source), and receives every embedding (4*D bytes a
  row, 2 KB for 512-d) through the object store to write the shards: ~50-100 MB/s of parquet on one
  disk, i.e. 25-50k rows/s, far above what tens of CPU actors produce, but the ceiling for a
  few hundred GPU actors (then write shards from the actors, or `Dataset.write_parquet`).
- reads: with reader="paths" every actor reads from the shared filesystem (NFS, Lustre, a FUSE
  bucket): that filesystem's aggregate throughput is the ceiling; with reader="binary" Ray's
  read tasks use pyarrow filesystems (s3://, gs://) and scale with the read tasks instead, but
  `read_binary_files` first lists (stats) every path on the driver, one by one, before any task runs.
- actors: each holds a model copy (the tiny model ~ 10 MB, ViT-L ~1.7 GB) and needs its batch in
  flight; past the point where the reads above are saturated, more actors add nothing.
- order: `preserve_order=True` keeps shards in source order (deterministic corpora) at the cost of
  head-of-line waiting behind a slow block; a cluster with stragglers may prefer it off.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from clipspace.corpus.model_spec import ModelSpec
from clipspace.embedding import usable_cores
from clipspace.errors import BadImageError, ClipspaceError

READERS = ("paths", "binary")


class _EmbedBatch:
    """The map_batches UDF: one model per actor, loaded in __init__ (once), by name."""

    def __init__(self, spec: ModelSpec, batch_size: int, reader: str, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.clip, self.batch_size, self.reader = spec.load(), batch_size, reader

    def __call__(self, batch: dict) -> dict:
        from clipspace.corpus.local_engine import embed_paths

        paths = [str(p) for p in batch["path"]]
        if self.reader == "paths":
            emb, errors = embed_paths(self.clip, paths, batch_size=self.batch_size)
        else:
            emb, errors = self._decode_and_embed(paths, list(batch["bytes"]))
        return {"path": np.array(paths, dtype=object), "embedding": emb,
                "error": np.array(["" if e is None else e for e in errors], dtype=object)}  # "" = no error

    def _decode_and_embed(self, paths: list[str], blobs: list) -> tuple[np.ndarray, list]:
        import torch

        from clipspace.images import decode_image

        errors, pixels, rows = [], [], []
        for i, (p, data) in enumerate(zip(paths, blobs)):
            try:
                if not data:  # read_image_file's own check, which Ray's reader skipped
                    raise BadImageError(p, "empty file (0 bytes)")
                pixels.append(self.clip.preprocess(decode_image(bytes(data), Path(p))))
                rows.append(i)
                errors.append(None)
            except BadImageError as e:
                errors.append(e.reason)
        emb = np.zeros((len(paths), self.clip.embed_dim), np.float32)
        for s in range(0, len(pixels), self.batch_size):
            emb[rows[s:s + self.batch_size]] = self.clip.encode_tensors(torch.stack(pixels[s:s + self.batch_size]))
        return emb, errors


def start_ray(address: str | None = None, attempts: int = 2):
    """ray.init for this job, unless Ray is already initialised; returns whether we started it.
    address: a cluster to connect to (default: RAY_ADDRESS if set, else a new local Ray with 2
    logical CPUs per core, at least 4: see the module docstring for why)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        return True
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address="local", num_cpus=max(4, 2 * usable_cores()), include_dashboard=False,
                     log_to_driver=False)
            return True
        except Exception as e:  # start-up failed (a raylet abort surfaces as a plain Exception)
            ray.shutdown()  # stops whatever did come up
            if attempt == attempts:
                raise ClipspaceError(f"a local Ray did not start ({attempts} tries; last: {type(e).__name__}: "
                                     f"{str(e)[:300]}). On a busy machine the raylet can give up waiting for its "
                                     "agents: see the raylet.err of the newest session under Ray's temp folder "
                                     "(/tmp/ray by default), and retry when the machine is quieter") from e
            warnings.warn(f"a local Ray did not start ({type(e).__name__}); trying once more")
    return True


def run_ray(spec: ModelSpec, paths: list[str], ident, *, shard_size: int, batch_size: int = 64,
            address: str | None = None, num_actors: int | None = None, actor_cpus: float | None = None,
            actor_gpus: float = 0, reader: str = "paths",
            preserve_order: bool = True) -> Iterator[tuple[list[str], np.ndarray, list[str | None]]]:
    """Yield (paths, embeddings, errors) in chunks of `shard_size` rows as Ray produces them."""
    import ray
    import ray.data

    if reader not in READERS:
        raise ValueError(f"reader={reader!r}; use one of {READERS}")
    address = address or os.environ.get("RAY_ADDRESS") or None
    started = start_ray(address)
    try:
        total_cpus = float(ray.cluster_resources().get("CPU", 1))
        cpus = 1.0 if actor_cpus is None else float(actor_cpus)
        if num_actors is None:  # local: one per core; cluster: half the CPU budget (the rest feeds them)
            num_actors = usable_cores() if started and not address else max(1, int(total_cpus / 2 / max(cpus, 1e-3)))
        num_actors = max(1, min(int(num_actors), len(paths)))
        blocks = max(1, min(len(paths), max(4 * num_actors, math.ceil(len(paths) / batch_size))))
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = preserve_order
        ctx.enable_progress_bars = False
        if reader == "paths":
            ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
        else:  # the listing runs here, on the driver; paths with no file behind them are dropped from it
            try:
                ds = ray.data.read_binary_files(paths, include_paths=True, override_num_blocks=blocks,
                                                ignore_missing_paths=True)
            except ValueError as e:
                if "No files found" not in str(e):
                    raise
                ds = None  # not one path has a file: each becomes a row with its reason, below
        if ds is not None:
            ds = ds.map_batches(_EmbedBatch, fn_constructor_kwargs=dict(spec=spec, batch_size=batch_size,
                                                                        reader=reader, threads=max(1, int(cpus))),
                                compute=ray.data.ActorPoolStrategy(size=num_actors), batch_size=batch_size,
                                batch_format="numpy", num_cpus=cpus, num_gpus=actor_gpus or None)
        wanted, seen = set(paths), set()
        batches = () if ds is None else ds.iter_batches(batch_size=shard_size, batch_format="numpy",
                                                        prefetch_batches=1)
        for batch in batches:
            got = [str(p) for p in batch["path"]]
            if reader == "binary":  # Ray may hand paths back without the leading '/' of a local file
                got = [p if p.startswith("/") or p in wanted else "/" + p for p in got]
            keep = [i for i, p in enumerate(got) if p in wanted and p not in seen]  # not a folder's expansion
            seen.update(got[i] for i in keep)
            emb = np.asarray(batch["embedding"], dtype=np.float32).reshape(len(got), ident.dim)[keep]
            errors = [None if not batch["error"][i] else str(batch["error"][i]) for i in keep]
            if keep:
                yield [got[i] for i in keep], emb, errors
        missing = [p for p in paths if p not in seen]  # reader="binary": what Ray's reader left out
        if missing and reader == "paths":  # every path is a row of from_items: a lost one is Ray's bug
            raise ClipspaceError(f"the Ray job returned no row for {len(missing)} paths (first: {missing[0]}); "
                                 "the shards written so far are kept: rerun the same command to embed the rest")
        for s in range(0, len(missing), shard_size):
            chunk = missing[s:s + shard_size]
            yield chunk, np.zeros((len(chunk), ident.dim), np.float32), [_why_unread(p) for p in chunk]
    finally:
        if started:
            ray.shutdown()


def _why_unread(path: str) -> str:
    """The reason for a path Ray's reader did not return: clipspace's own reader's, as the local
    engine would give it (or a plain statement if the file reads fine from here)."""
    from clipspace.images import read_image_file

    try:
        read_image_file(path)
    except BadImageError as e:
        return e.reason
    return "skipped by Ray's read_binary_files (it reads fine from the driver; reader='paths' embeds it)"
