"""The on-disk form of a corpus: parquet shards plus a small manifest, written so that a crash never
leaves a shard that is read half-written.

A corpus folder holds
- `_corpus.json`: the manifest (model id, model name and pretrained tag to reload it, preprocessing
  digest, embedding width, format version); written first, checked on every resume so that two
  embedding spaces are never mixed in one folder;
- `part-RRRR-KKKKKK.parquet`: shards, run RRRR (1 for the first run, 2 for the first resume...)
  and shard KKKKKK within it; a corpus's row order is the shards' name order, then row order;
- `_embeddings-<key>.npy`, `_index-<key>.faiss`: derived files `Corpus.open` and `Corpus.index` make,
  keyed by the shard set (never served once a shard is added or replaced).
Every name but the shards' starts with '_' or '.', which dataset readers skip, so the folder itself
reads as one table: `pandas.read_parquet(DIR)`, `pyarrow.dataset.dataset(DIR)`,
`ray.data.read_parquet(DIR)`, DuckDB's `read_parquet('DIR/*.parquet')`.

Schema of every shard (one row per input path, good or bad):

| column | type | |
|---|---|---|
| path | string | the absolute path read |
| embedding | fixed_size_list<float32>[D] | L2-normalised image embedding; null when the file failed |
| error | string | null for a good row; else the reason, the same text `BadImageError.reason` gives |
| model | string (dictionary) | model id: `name@weights_id` (weights_id is the sha256 of the weights file) |
| preprocess | string (dictionary) | digest of the model's preprocessing, dtype and background colour |

Atomicity: a shard is written to `.tmp-part-...` in the same folder, fsynced, then `os.replace`d
to its name; readers only ever list `part-*.parquet`, so a shard is either complete or absent.
Leftover `.tmp-*` files of a killed run are removed by the next one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clipspace.errors import ClipspaceError, InvalidArgumentError

FORMAT = "clipspace-corpus/1"
MANIFEST = "_corpus.json"  # "_" and "." names are skipped by pyarrow, pandas and Ray dataset readers
SHARD_GLOB = "part-*.parquet"
_SHARD_NAME = re.compile(r"^part-(\d{4,})-(\d{6,})\.parquet$")


class CorpusMismatchError(ClipspaceError, ValueError):
    """A corpus folder holding embeddings of another model or preprocessing than the one asked for."""


@dataclass(frozen=True)
class Identity:
    """What makes two embeddings comparable: the model's weights and its preprocessing."""

    model_id: str  # name@weights_id
    preprocess: str  # sha256 hex of the preprocessing description
    dim: int
    name: str  # to reload: load_clip(name, pretrained) (or load_clip(pretrained) for a folder)
    pretrained: str | None


def _strip_addresses(text: str) -> str:
    # the repr of a transform can hold '<function f at 0x7f..>', which differs per process
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def identity_of(clip, background=(255, 255, 255)) -> Identity:
    """The Identity of a loaded ClipModel (its preprocessing as its repr, address-free, hashed)."""
    dtype = str(next(clip.model.parameters()).dtype)
    desc = "\n".join([_strip_addresses(repr(clip.preprocess)), dtype, repr(tuple(background))])
    return Identity(model_id=f"{clip.name}@{clip.weights_id or 'unidentified'}",
                    preprocess=hashlib.sha256(desc.encode()).hexdigest(), dim=int(clip.embed_dim),
                    name=clip.name, pretrained=clip.pretrained)


def schema(dim: int) -> pa.Schema:
    return pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32(), dim)), ("error", pa.string()),
                      ("model", pa.dictionary(pa.int32(), pa.string())),
                      ("preprocess", pa.dictionary(pa.int32(), pa.string()))],
                     metadata={b"clipspace": FORMAT.encode()})


def rows_table(paths, embeddings: np.ndarray, errors, ident: Identity) -> pa.Table:
    """A shard's table: `embeddings` (N, D) float32 whose rows with an error are ignored (null)."""
    n, dim = len(paths), ident.dim
    emb = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32).reshape(n, dim))
    errors = [None if e is None else str(e) for e in errors]
    if len(errors) != n:
        raise InvalidArgumentError(f"{n} paths but {len(errors)} error entries")
    failed = pa.array([e is not None for e in errors], pa.bool_())
    column = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim, mask=failed)
    const = lambda s: pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([s]))  # noqa: E731
    return pa.Table.from_arrays([pa.array([str(p) for p in paths], pa.string()), column, pa.array(errors, pa.string()),
                                 const(ident.model_id), const(ident.preprocess)], schema=schema(dim))


def write_shard(out: Path, name: str, table: pa.Table) -> Path:
    """Write `table` to out/name through a fsynced temporary file and an atomic rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{name}.", dir=out)
    try:
        with os.fdopen(fd, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out / name


def shard_name(run: int, k: int) -> str:
    return f"part-{run:04d}-{k:06d}.parquet"


def list_shards(out: Path) -> list[Path]:
    """The complete shards of a corpus folder, in corpus order (by name)."""
    return sorted((p for p in Path(out).glob(SHARD_GLOB) if _SHARD_NAME.match(p.name)), key=lambda p: p.name)


def next_run(out: Path) -> int:
    runs = [int(_SHARD_NAME.match(p.name)[1]) for p in list_shards(out)]
    return max(runs, default=0) + 1


def written_paths(out: Path) -> set[str]:
    """Paths already in a complete shard (good or failed rows alike: a bad file is not retried)."""
    done: set[str] = set()
    for p in list_shards(out):
        done.update(pq.read_table(p, columns=["path"]).column("path").to_pylist())
    return done


def remove_partial(out: Path) -> int:
    """Delete the temporary files a killed writer left behind; returns how many."""
    n = 0
    for p in Path(out).glob(".tmp-part-*"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def shard_set_key(shards: list[Path]) -> str:
    """A key for a set of shard files: their names, sizes and modification times (a shard replaced
    or added gives a new key, so derived files made from the old set are never reused)."""
    h = hashlib.sha256()
    for p in shards:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def read_manifest(out: Path) -> dict | None:
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise CorpusMismatchError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}")
    return data


def check_or_write_manifest(out: Path, ident: Identity, extra: dict | None = None) -> dict:
    """Write the manifest of a new corpus folder, or check that an existing one is in the same space."""
    out = Path(out)
    have = read_manifest(out)
    if have is not None:
        for key, mine in (("model", ident.model_id), ("preprocess", ident.preprocess), ("dim", ident.dim)):
            if have.get(key) != mine:
                raise CorpusMismatchError(
                    f"{out} holds a corpus embedded with {key} {have.get(key)!r}, not {mine!r}: embeddings of two "
                    "models or preprocessings cannot share a folder; give another --out, or the same model")
        return have
    if list_shards(out):
        raise CorpusMismatchError(f"{out} has shards but no {MANIFEST}; it was not written by clipspace embed "
                                  "(or the manifest was deleted): give an empty folder")
    data = {"format": FORMAT, "model": ident.model_id, "preprocess": ident.preprocess, "dim": ident.dim,
            "model_name": ident.name, "pretrained": ident.pretrained, **(extra or {})}
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{MANIFEST}.", dir=out)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / MANIFEST)
    return data
