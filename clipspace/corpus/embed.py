"""`embed(source, out)`: a SOURCE of images to parquet shards of embeddings, on the local engine
or on Ray, resumable.

What a run does, whichever the engine:
1. resolve SOURCE to paths (`sources.read_source`) and load the model once here, for its identity;
2. check or write `out/_corpus.json` (one embedding space per folder) and take `out/.lock`;
3. skip every path already in a complete shard (good and failed rows alike), so a rerun after a
   crash writes only what is missing, and a finished corpus rerun writes nothing;
4. stream the rest through the engine, `shard_size` paths a shard, each shard written atomically
   as it arrives (`shards.write_shard`): a crash loses at most the shards in flight.

Resume is this idempotent skip, not Ray's `CheckpointConfig` (alpha in Ray 2.60, and its
filter actor pool deadlocked on 2 cores: docs/corpus.md). It keys on the path, not on the file's
content: a file changed after it was embedded keeps its old row until its shard is deleted.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipspace.corpus import shards
from clipspace.corpus.model_spec import resolve_model
from clipspace.corpus.sources import read_source
from clipspace.errors import ClipspaceError, InvalidArgumentError

ENGINES = ("local", "ray")
DEFAULT_SHARD_SIZE = 4096  # rows a shard: ~2 MB of 128-d, ~8 MB of 512-d vectors; small enough to lose little


@dataclass
class EmbedReport:
    """What one `embed` call did. `written` and `failed` count this run's rows (failed ones are
    written too, with their reason); `skipped` the source paths already in the corpus."""

    out: Path
    engine: str
    total: int
    written: int
    failed: int
    skipped: int
    shards: list[Path]
    seconds: float
    duplicates: int = 0

    def __str__(self) -> str:
        rate = f", {self.written / self.seconds:.0f} images/s" if self.written and self.seconds > 0 else ""
        dup = f"; {self.duplicates} duplicate paths in the source ignored" if self.duplicates else ""
        return (f"{self.engine} engine: wrote {self.written} rows ({self.failed} failed, with reasons) in "
                f"{len(self.shards)} shards to {self.out}; {self.skipped} of {self.total} paths were already "
                f"written{dup} ({self.seconds:.1f} s{rate})")


@contextmanager
def _locked(out: Path):
    """One writer per corpus folder: an flock, released by the kernel if the process dies."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; concurrent runs there are the user's to avoid
        yield
        return
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClipspaceError(f"another clipspace embed is writing {out} (it holds {out / '.lock'}); wait for "
                                 "it to finish, or give another --out") from None
        yield
    finally:
        os.close(fd)


def embed(source, out, model=None, *, pretrained: str | None = None, engine: str = "local", batch_size: int = 64,
          shard_size: int = DEFAULT_SHARD_SIZE, ray_address: str | None = None, num_actors: int | None = None,
          actor_cpus: float | None = None, actor_gpus: float = 0, reader: str = "paths", device: str | None = None,
          cache: bool = False, column: str = "path", workers: int | None = None) -> EmbedReport:
    """Embed every image of `source` into parquet shards under `out` (see the module docstring).

    source: a folder, a text file of paths, a parquet file with a `column` of paths, or a list.
    model: None (the offline default), a name or folder `load_clip` takes (with `pretrained`), or a
      loaded ClipModel; Ray actors load it again by name (`model_spec`), never unpickle it.
    engine: "local" (encode_images, no Ray) or "ray" (`ray_engine.run_ray`; `ray_address`,
      `num_actors`, `actor_cpus`, `actor_gpus`, `reader` are its options).
    batch_size: images per model call; shard_size: rows per parquet shard.
    cache: also use clipspace's embedding cache (off: the corpus is the store).
    """
    if engine not in ENGINES:
        raise InvalidArgumentError(f"engine={engine!r}; use one of {ENGINES}")
    for name, v in (("batch_size", batch_size), ("shard_size", shard_size)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise InvalidArgumentError(f"{name}={v!r}; give a positive integer")
    t0 = time.perf_counter()
    src = read_source(source, column=column)
    clip, spec = resolve_model(model, pretrained, device)
    ident = shards.identity_of(clip)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        shards.check_or_write_manifest(out, ident, {"source": src.description,
                                                     "load": {"name": spec.name, "pretrained": spec.pretrained}})
        shards.remove_partial(out)
        done = shards.written_paths(out)
        todo = [p for p in src.paths if p not in done]
        run, k, written, failed, made = shards.next_run(out), 0, 0, 0, []

        def write(paths, emb, errors):
            nonlocal k, written, failed
            made.append(shards.write_shard(out, shards.shard_name(run, k), shards.rows_table(paths, emb, errors, ident)))
            k += 1
            written += len(paths)
            failed += sum(e is not None for e in errors)

        known = [p for p in todo if p in src.known_errors]  # e.g. subfolders that could not be listed
        if known:
            write(known, np.zeros((len(known), ident.dim), np.float32), [src.known_errors[p] for p in known])
        readable = [p for p in todo if p not in src.known_errors]
        if readable:
            if engine == "local":
                from clipspace.corpus.local_engine import run_local

                chunks = [readable[s:s + shard_size] for s in range(0, len(readable), shard_size)]
                results = run_local(clip, chunks, batch_size=batch_size, cache=cache, workers=workers)
            else:
                from clipspace.corpus.ray_engine import run_ray

                results = run_ray(spec, readable, ident, shard_size=shard_size, batch_size=batch_size,
                                  address=ray_address, num_actors=num_actors, actor_cpus=actor_cpus,
                                  actor_gpus=actor_gpus, reader=reader)
            for paths, emb, errors in results:
                write(paths, emb, errors)
    return EmbedReport(out, engine, len(src.paths), written, failed, len(src.paths) - len(todo), made,
                       time.perf_counter() - t0, src.duplicates)
