"""`Corpus.open(DIR)`: a folder of embedding shards as one memory-mapped (N, D) array and its table.

Rows: `.embeddings` holds the good rows only (those with an embedding), in corpus order (shards by
name, then rows); `.table` is aligned with it, row i describing embeddings[i] (path, error = None,
shard). Failed files are in `.failures` (path, error, shard), not in `.table`, so that every
consumer taking an (N, D) array and an N-row table (maps, probes, zero-shot) can take a Corpus
as it is: `np.asarray(corpus)` is `corpus.embeddings`, `len(corpus)` its rows.

Memory map: on first open the shards' embeddings are copied into `_embeddings-<key>.npy` beside
them, keyed by the shard set (names, sizes, mtimes), then opened with `np.load(mmap_mode="r")`:
nothing but the pages touched is read into memory, and a later open costs a listing and the table
columns. A shard added, replaced or deleted gives a new key, so a stale file is never served (the
old one is removed). In a folder this process cannot write, the array is built in memory instead.
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from clipspace.corpus import index as _index
from clipspace.corpus import shards as _shards
from clipspace.errors import InvalidArgumentError


def _shard_embeddings(path: Path, dim: int) -> np.ndarray:
    """The non-null embeddings of one shard, (n_good, dim) float32, in row order."""
    col = pq.read_table(path, columns=["embedding"]).column("embedding").combine_chunks()
    good = col.filter(col.is_valid())
    return good.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)


class Corpus:
    """An embedded corpus: `.embeddings` (N, D) float32 memmap, `.table` (N rows, aligned),
    `.failures`, `.manifest` (model, preprocessing digest, dim), `.directory`."""

    def __init__(self, directory: Path, embeddings: np.ndarray, table: pd.DataFrame, failures: pd.DataFrame,
                 manifest: dict, key: str):
        self.directory, self.embeddings, self.table, self.failures = directory, embeddings, table, failures
        self.manifest, self.key = manifest, key
        self._indexes: dict = {}
        self._clip = None

    # --- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, directory) -> "Corpus":
        directory = Path(directory).expanduser()
        manifest = _shards.read_manifest(directory)
        if manifest is None:
            raise InvalidArgumentError(f"{directory} is not a corpus folder (no {_shards.MANIFEST}); make one with "
                                       "clipspace embed SOURCE --out DIR")
        files = _shards.list_shards(directory)
        key = _shards.shard_set_key(files)
        parts = []
        for f in files:
            t = pq.read_table(f, columns=["path", "error", "model", "preprocess"])
            for col, want in (("model", manifest["model"]), ("preprocess", manifest["preprocess"])):
                have = set(t.column(col).unique().cast("string").to_pylist()) if len(t) else set()
                if have - {want}:
                    raise _shards.CorpusMismatchError(f"{f}: {col} {sorted(have)} is not the corpus's {want!r}; "
                                                      "a shard of another embedding space was copied in: remove it")
            parts.append(pd.DataFrame({"path": t.column("path").to_pylist(), "error": t.column("error").to_pylist(),
                                       "shard": f.name}))
        rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["path", "error", "shard"])
        good = rows["error"].isna().to_numpy()
        table = rows[good].reset_index(drop=True)
        failures = rows[~good].reset_index(drop=True)
        embeddings = cls._consolidate(directory, files, key, int(good.sum()), int(manifest["dim"]))
        return cls(directory, embeddings, table, failures, manifest, key)

    @staticmethod
    def _consolidate(directory: Path, files: list[Path], key: str, n: int, dim: int) -> np.ndarray:
        target = directory / f"_embeddings-{key}.npy"
        if target.is_file():
            arr = np.load(target, mmap_mode="r")
            if arr.shape == (n, dim) and arr.dtype == np.float32:
                return arr
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-_embeddings-", suffix=".npy", dir=directory)
        except OSError as e:  # a read-only corpus (another user's, a mounted archive): build it in memory
            warnings.warn(f"cannot write {target} ({e}); the embeddings are read into memory instead of mapped")
            return np.concatenate([_shard_embeddings(f, dim) for f in files] or [np.zeros((0, dim), np.float32)])
        os.close(fd)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
            at = 0
            for f in files:  # one shard in memory at a time
                e = _shard_embeddings(f, dim)
                out[at:at + len(e)] = e
                at += len(e)
            out.flush()
            del out
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for old in directory.glob("_embeddings-*.npy"):  # made from another shard set: never to be served
            if old != target:
                old.unlink(missing_ok=True)
        return np.load(target, mmap_mode="r")

    # --- an array, for anything that takes one ----------------------------------------------------
    def __len__(self) -> int:
        return len(self.embeddings)

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.embeddings)
        if dtype is not None and np.dtype(dtype) != a.dtype:
            return a.astype(dtype)
        return np.array(a, copy=True) if copy else a

    @property
    def shape(self) -> tuple:
        return self.embeddings.shape

    @property
    def dtype(self):
        return self.embeddings.dtype

    @property
    def ndim(self) -> int:
        return 2

    @property
    def paths(self) -> list[str]:
        return self.table["path"].tolist()

    def __repr__(self) -> str:
        return (f"Corpus({str(self.directory)!r}: {len(self)} embeddings of dim {self.manifest['dim']}, "
                f"{len(self.failures)} failed files, model {self.manifest['model']!r})")

    def chunks(self, rows: int = 8192, min_rows: int = 1):
        """(start, embeddings[start:start+rows]) over the memmap; a last chunk shorter than `min_rows`
        is merged into the one before (sklearn's `gen_batches` rule: IncrementalPCA needs >= n_components)."""
        from sklearn.utils import gen_batches

        for sl in gen_batches(len(self), rows, min_batch_size=min_rows):
            yield sl.start, np.asarray(self.embeddings[sl], dtype=np.float32)

    # --- analysis ------------------------------------------------------------------------------
    def pca(self, n_components: int, rows: int | None = None):
        """sklearn IncrementalPCA fitted chunk by chunk over the memmap (`rows` per partial_fit,
        default 8192, the batches `IncrementalPCA(batch_size=rows).fit` would take): memory stays at
        one chunk whatever the corpus size.
        Returns the fitted IncrementalPCA (transform the corpus with `.transform(corpus.embeddings)`
        or chunk by chunk)."""
        from sklearn.decomposition import IncrementalPCA

        if not 1 <= n_components <= min(len(self), self.manifest["dim"]):
            raise InvalidArgumentError(f"n_components={n_components}; give 1..{min(len(self), self.manifest['dim'])}")
        rows = max(rows or 8192, n_components)
        ipca = IncrementalPCA(n_components=n_components)
        for _, x in self.chunks(rows, min_rows=n_components):
            ipca.partial_fit(x)
        return ipca

    def index(self, kind: str = "auto", **kwargs):
        """The faiss index of the embeddings (see clipspace.corpus.index for the choice), built once and
        kept in memory and beside the shards as `_index-<kind>-<key>.faiss`."""
        import faiss

        kind = _index.choose_kind(len(self), kind)
        if kind in self._indexes:
            return self._indexes[kind]
        path = self.directory / f"_index-{kind}-{self.key}.faiss"
        if path.is_file() and not kwargs:
            idx = faiss.read_index(str(path))
        else:
            idx = _index.build_index(self.embeddings, kind, **kwargs)
            if not kwargs:
                try:
                    fd, tmp = tempfile.mkstemp(prefix=".tmp-_index-", dir=self.directory)
                    os.close(fd)
                    faiss.write_index(idx, tmp)
                    os.replace(tmp, path)
                    for old in self.directory.glob(f"_index-{kind}-*.faiss"):
                        if old != path:
                            old.unlink(missing_ok=True)
                except OSError:
                    pass  # a read-only corpus: the index lives in memory only
        self._indexes[kind] = idx
        return idx

    def clip(self):
        """The corpus's model, loaded as the manifest says (and checked against its weights id)."""
        if self._clip is None:
            from clipspace.corpus.model_spec import ModelSpec

            how = self.manifest.get("load") or {"name": self.manifest.get("model_name"),
                                                "pretrained": self.manifest.get("pretrained")}
            clip = ModelSpec(how["name"], how["pretrained"], "cpu", self.manifest["model"].split("@", 1)[1]).load()
            self._clip = clip
        return self._clip

    def neighbours(self, query, k: int = 10, *, clip=None, kind: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (Q, k), of the k nearest corpus rows to each query by cosine: rows index
        `.embeddings` and `.table`. `query`: vectors (Q, D) or (D,), or text (a str or a list of str),
        embedded with `clip` (default: the corpus's own model, `self.clip()`)."""
        if isinstance(query, str) or (isinstance(query, (list, tuple)) and query and isinstance(query[0], str)):
            query = np.asarray((clip or self.clip()).encode_texts(list([query] if isinstance(query, str) else query)))
        return _index.search(self.index(kind), np.asarray(query, dtype=np.float32), min(int(k), max(len(self), 1)))
