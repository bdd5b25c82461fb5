"""Embed images and texts with a ClipModel: batched, cached on disk, honest about what failed.

Both functions return `Embeddings`, a float32 numpy array of L2-normalised rows (one per input
kept, in input order) that also carries `.sources`, `.failures` and `.truncated`.

Strictness: an explicit list of images is strict by default (a bad file raises BadImageError),
because its rows are expected to line up with the list; a folder is not (bad files are skipped,
listed in `.failures` and in a warning, and `.sources` says which file each row is). Every entry
of a folder that looks like an image but cannot be read (a dangling symlink, a loop, an unreadable
file or subfolder) is in `.failures` once, with the true reason.

Cache keys of files hash the bytes read for the embedding itself, in the same read: a file edited
meanwhile, or rewritten with its size and date kept, can never file one content's vector under
another's key (so files are read on every call, cached or not).

Speed: images are read and preprocessed by a few threads (PIL and torch release the GIL) one
batch ahead of the model, so decoding overlaps compute instead of waiting for it: a batch's files
are read and hashed (on one thread when they are small: `THREADED_READ_BYTES`), looked up in the
cache in ONE query, and only the misses decoded and preprocessed; each model batch's vectors are written in ONE transaction (`clipspace.cache`, SQLite).
The image tower runs at torch's thread count or one fewer, whichever the call measures to be faster
(`_ModelThreads`: readers and OpenMP threads fight for the cores of a small machine). Texts are
tokenized once, the next batch while the model runs on this one, and run through the text tower
without the padding after the batch's longest text (`text_features`). Cached vectors are also kept in
memory (`clipspace.cache`), so a rerun in the same session costs a read and a hash per file, and
a lookup per input, not a database query; a batch with nothing left for the model is not read
ahead on another thread (`_ahead`'s ahead_if), so an all-cached call of small files runs on the
calling thread alone. The reading threads run torch on one OpenMP thread (`_reading_threads`).
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from PIL import Image
from threadpoolctl import ThreadpoolController
from tqdm.auto import tqdm

from clipspace.cache import VectorCache, describe_transform, digest, warn_user as _warn
from clipspace.images import (IMAGE_EXTENSIONS, WHITE, BadImageError, decode_image, describe, list_images, load_image,
                     read_image_file)


class Embeddings(np.ndarray):
    """Rows of embeddings plus what happened on the way:
    `.sources` the inputs kept, one per row; `.failures` a list of (source, reason) for inputs
    skipped; `.truncated` indices (into the input list) of texts cut at the context length.
    Arrays derived from it (slices, arithmetic) are plain arrays, metadata-free."""

    def __new__(cls, rows, sources=(), failures=(), truncated=()):
        obj = np.asarray(rows, dtype=np.float32).view(cls)
        obj.sources, obj.failures, obj.truncated = list(sources), list(failures), list(truncated)
        return obj

    def __array_finalize__(self, obj):
        self.sources, self.failures, self.truncated = None, [], []  # a slice no longer knows its rows

    def __array_wrap__(self, out, context=None, return_scalar=False):
        out = out.view(np.ndarray)  # ufunc results (emb @ x.T, emb.mean(0)) are plain arrays
        return out[()] if return_scalar else out


THREADED_READ_BYTES = 64 * 1024  # files at least this big are read and hashed on the reading threads
# A file's cache key: this prefix and the sha256 of its bytes. No `digest()` over it (a second hash,
# a fifth of a cached rerun): "file:" keeps it apart from every other key, which is 64 hex digits.
FILE_KEY = "file:"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def encode_images(clip, images, *, batch_size: int = 64, strict: bool | None = None, cache: bool | None = None,
                  progress: bool | None = None, background=WHITE, max_pixels: int | None = None,
                  workers: int | None = None, precision: str = "fp32") -> Embeddings:
    """Embed `images`: a folder (recursive, sorted), or a list of file paths, PIL images and numpy
    arrays (a single one, HxW or HxWxC, or a 4-d N x H x W x C array, also works).

    strict: raise on the first bad image (default for lists) or skip it (default for folders).
    cache: None caches file inputs only (keyed on file bytes); True also in-memory images (keyed on
      pixels); False never. Location: `clipspace.cache.cache_dir()`.
    progress: a tqdm bar; None shows one when there are more than two batches of inputs.
    background, max_pixels: passed to `clipspace.images.load_image`.
    workers: threads reading and preprocessing images ahead of the model (None: one per CPU core,
      at most 4; 0: all on the calling thread).
    precision: "fp32" (the default: open_clip's own numbers), or "bf16" / "fp16" to run the image
      tower under torch.autocast (matmuls in reduced precision, norms and softmax in float32): faster
      where the hardware has it (bf16 on CPUs with AVX512-BF16 or AMX, both on GPUs), not identical
      (benchmarks/encode.py reports the agreement). Its vectors are cached apart from fp32's.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"encode_images: precision={precision!r}; use one of {', '.join(map(repr, PRECISIONS))}")
    sources, from_folder, unlisted = _image_list(images)
    strict = (not from_folder) if strict is None else strict
    store = None
    if cache is not False and clip.weights_id:
        space = digest("image", clip.name, clip.weights_id, _dtype(clip), describe_transform(clip.preprocess),
                       tuple(background), *(() if precision == "fp32" else (precision,)))
        store = VectorCache(space, clip.embed_dim)
    put_many = _writer(store)
    rows, failures = {}, {}

    def fail(i, err: BadImageError):
        if strict:
            raise err
        failures[i] = err.reason

    def read(i):  # in a worker: one input's bytes (files) or RGB image (in memory), and its cache key
        src = sources[i]
        try:
            if i in unlisted:
                raise BadImageError(src, unlisted[i])
            if isinstance(src, (str, os.PathLike)):
                # read once: the key hashes the very bytes decoded, so an edit meanwhile cannot mix them up
                data = read_image_file(src)
                return (FILE_KEY + hashlib.sha256(data).hexdigest() if store else None), data
            img = load_image(src, background, max_pixels=max_pixels)
            return (digest("pixels", img.size, img.tobytes()) if store and cache else None), img
        except BadImageError as e:
            return e

    def convert(i, data):  # in a worker: decode a file's bytes, then the model's preprocess
        try:
            img = decode_image(data, Path(sources[i]).expanduser(), background, max_pixels=max_pixels) \
                if isinstance(data, bytes) else data
        except BadImageError as e:
            return e
        return clip.preprocess(img)

    def prepare(batch, pool):  # one batch ahead of the model: read all, ONE cache lookup, convert the misses
        # small files on this thread: reading and hashing a 6 KB PNG takes 12 us, less than handing the GIL
        # between threads costs (19 us on 2); from about 50 KB threads win (2 MB: 1.4 ms vs 0.7 ms).
        # The batch's first file decides; in-memory images (pixels to convert and hash) use the threads.
        first = read(batch[0])
        small = isinstance(first, tuple) and isinstance(first[1], bytes) and len(first[1]) < THREADED_READ_BYTES
        results = [first] + _map(None if small else pool, read, batch[1:], chunked=True)  # a task per thread
        keyed = [j for j, r in enumerate(results) if isinstance(r, tuple) and r[0]]
        if keyed:
            for j, hit in zip(keyed, store.get_many([results[j][0] for j in keyed])):
                if hit is not None:
                    results[j] = hit
        todo = [j for j, r in enumerate(results) if isinstance(r, tuple)]
        for j, pixels in zip(todo, _map(pool, lambda j: convert(batch[j], results[j][1]), todo)):
            results[j] = pixels if isinstance(pixels, BadImageError) else (results[j][0], pixels)
        return results

    pending = []  # (index, key, pixels) of misses, run through the model batch_size at a time

    def run_model():
        if pending:
            with threads.model(len(pending)):
                vectors = _encode_pixels(clip, torch.stack([p for _, _, p in pending]), precision)
            for (i, _, _), v in zip(pending, vectors):
                rows[i] = v
            put_many([(key, v) for (_, key, _), v in zip(pending, vectors) if key])  # one transaction
            pending.clear()

    batches = [list(range(s, min(s + batch_size, len(sources)))) for s in range(0, len(sources), batch_size)]
    show = len(sources) > 2 * batch_size if progress is None else progress
    workers = _workers(len(sources)) if workers is None else int(workers)
    threads = _ModelThreads(workers, len(batches))
    with _reading_threads(workers) if workers > 0 else nullcontext() as pool, \
            tqdm(total=len(sources), desc="embedding images", unit="img", disable=not show) as bar, \
            _ahead(lambda b: prepare(b, pool), batches, int(workers > 0), per_item=False,
                   ahead_if=lambda results: any(isinstance(r, tuple) for r in results)) as prepared:  # misses
        for batch, results in zip(batches, prepared):
            for i, r in zip(batch, results):
                if isinstance(r, BadImageError):
                    fail(i, r)
                elif isinstance(r, np.ndarray):  # a cached vector
                    rows[i] = r
                else:
                    pending.append((i, *r))
                    if len(pending) == batch_size:
                        run_model()
            bar.update(len(batch))
        run_model()

    kept = sorted(rows)
    failed = [(sources[i], failures[i]) for i in sorted(failures)]
    if failed:
        lines = "\n".join(f"  {describe(s)}: {r}" for s, r in failed[:20])
        more = f"\n  ... and {len(failed) - 20} more (see .failures)" if len(failed) > 20 else ""
        _warn(f"{len(failed)} of {len(sources)} images could not be read and were skipped:\n{lines}{more}")
    out = np.stack([rows[i] for i in kept]) if kept else np.zeros((0, clip.embed_dim), np.float32)
    return Embeddings(out, [sources[i] for i in kept], failed)


def _map(pool, fn, items: list, chunked: bool = False) -> list:
    """[fn(x) for x in items], on `pool`'s threads when there is one: a task per item, or with
    `chunked` one contiguous run of items per thread (for work too small to pay for a task each)."""
    if pool is None or len(items) < 2:
        return [fn(x) for x in items]
    if not chunked:
        return list(pool.map(fn, items))
    n = pool._max_workers
    runs = [items[k * len(items) // n:(k + 1) * len(items) // n] for k in range(n)]
    return [r for run in pool.map(lambda run: [fn(x) for x in run], runs) for r in run]


class _ModelThreads:
    """torch threads for the image tower in one encode_images call: torch's own count, or one
    fewer, whichever this call measures to run faster.

    When reading threads decode images while the model runs, torch's OpenMP threads and the readers
    compete for the same cores, and every parallel op waits at its barrier for a descheduled thread.
    How much that costs depends on the model (clipspace-tiny decodes a 256 px PNG in about the time
    its tower embeds it; ViT-B-32's tower costs 50x more) and on what else the machine runs (on a
    busy 2-core machine one torch thread made the tiny model 4x faster; on a quiet one it was a wash;
    for ViT-B-32 one thread fewer halves a quiet machine's speed). So it is measured, not guessed:
    with readers and enough batches, batch 2 runs at torch's count and batch 3 at one fewer, each
    timed from the end of the previous model call to the end of its own (reading waits included:
    the pipeline's whole cycle), and the rest of the call uses the faster, by at least 10 %
    (ties keep torch's count). torch's setting is put back after every model call.
    Shortcut: torch's thread count is process-wide, so another thread running torch meanwhile sees
    it too. The thread count changes no vector here (open_clip's outputs compared bit for bit at 1
    and 2 threads, both models; the bench reports the max difference from open_clip's own loop)."""

    MIN_BATCHES = 5  # below this the trial cannot pay for itself: torch's count throughout

    def __init__(self, workers: int, n_batches: int):
        self.trial = workers > 0 and n_batches >= self.MIN_BATCHES and torch.get_num_threads() >= 2
        self.calls, self.last_end, self.cycle, self.chosen = 0, None, {}, None

    @contextmanager
    def model(self, n: int):
        full = torch.get_num_threads()
        self.calls += 1
        use = full
        if self.trial:
            use = self.chosen if self.chosen is not None else (full - 1 if self.calls == 3 else full)
        if use != full:
            torch.set_num_threads(use)
        try:
            yield
        finally:
            if use != full:
                torch.set_num_threads(full)
            end = time.perf_counter()
            if self.trial and self.chosen is None and self.calls in (2, 3) and self.last_end is not None:
                self.cycle[use] = (end - self.last_end) / max(n, 1)
                if self.calls == 3 and len(self.cycle) == 2:
                    self.chosen = full - 1 if self.cycle[full - 1] < 0.9 * self.cycle[full] else full
            self.last_end = end


def _encode_pixels(clip, pixels: torch.Tensor, precision: str) -> np.ndarray:
    """clip.encode_tensors (fp32: open_clip's own call), or the image tower under torch.autocast
    at `precision`, normalised in float32 (a norm taken in bf16 is off by up to 1e-3)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return clip.encode_tensors(pixels)
    with torch.inference_mode(), torch.autocast(clip.device.type, dtype=dtype):
        z = clip.model.encode_image(pixels.to(clip.device))
    return F.normalize(z.float(), dim=-1).cpu().numpy()


def encode_texts(clip, texts, *, batch_size: int = 256, cache: bool = False,
                 progress: bool | None = None) -> Embeddings:
    """Embed texts (a list, or one string). Texts longer than the model's context are truncated by
    its tokenizer, as open_clip does; their indices are in `.truncated` and in a warning.
    cache: True stores text embeddings on disk too (off by default: texts are quick to embed)."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is a {type(t).__name__}, not a str")
    ctx = clip.context_length
    store = None
    if cache and clip.weights_id:
        space = digest("text", clip.name, clip.weights_id, _dtype(clip), type(clip.tokenizer).__name__, ctx)
        store = VectorCache(space, clip.embed_dim)
    put_many = _writer(store)
    keys = [digest(t) for t in texts] if store else []
    rows = {i: v for i, v in enumerate(store.get_many(keys)) if v is not None} if store else {}
    todo = [i for i in range(len(texts)) if i not in rows]
    counts = _token_counts(clip.tokenizer)
    batches = [todo[s:s + batch_size] for s in range(0, len(todo), batch_size)]
    show = len(todo) > 2 * batch_size if progress is None else progress
    with tqdm(total=len(todo), desc="embedding texts", unit="text", disable=not show) as bar, \
            _ahead(lambda b: tokenize(clip.tokenizer, [texts[i] for i in b], counts), batches,
                   int(len(batches) > 1), per_item=False) as ahead, \
            torch.inference_mode():
        for batch, tokens in zip(batches, ahead):
            z = text_features(clip.model, tokens.to(clip.device)).float().cpu().numpy()
            for i, v in zip(batch, z):
                rows[i] = v
            if store:
                put_many([(keys[i], v) for i, v in zip(batch, z)])  # one transaction per batch
            bar.update(len(batch))
    # cached texts were not tokenized above: count theirs (remembered per tokenizer in this process)
    truncated = [i for i, t in enumerate(texts) if (_count(clip.tokenizer, t, counts) or 0) > ctx]
    if truncated:
        shown = ", ".join(map(str, truncated[:20])) + (", ..." if len(truncated) > 20 else "")
        _warn(f"{len(truncated)} of {len(texts)} texts are longer than the model's context of {ctx} "
              f"tokens and were truncated: indices {shown} (see .truncated)")
    out = np.stack([rows[i] for i in range(len(texts))]) if texts else np.zeros((0, clip.embed_dim), np.float32)
    return Embeddings(out, texts, (), truncated)


_TRIM_CHECKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> trimmed path agrees


def _trimmable(model) -> bool:
    """open_clip's CLIP text tower: causal mask and features taken at the end token (argmax pooling)."""
    return (isinstance(model, open_clip.CLIP) and getattr(model, "text_pool_type", None) == "argmax"
            and isinstance(getattr(model, "attn_mask", None), torch.Tensor)
            and isinstance(getattr(model, "positional_embedding", None), torch.Tensor))


def _encode_trimmed(model, tokens: torch.Tensor, used: int) -> torch.Tensor:
    """open_clip's CLIP.encode_text on the first `used` positions only (same steps, shorter context)."""
    t = tokens[:, :used]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(t).to(cast) + model.positional_embedding[:used].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:used, :used]))
    x = text_global_pool(x, t, "argmax")
    if model.text_projection is not None:
        x = model.text_projection(x) if isinstance(model.text_projection, torch.nn.Linear) else x @ model.text_projection
    return F.normalize(x, dim=-1)


def text_features(model, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text(tokens, normalize=True)`, without the padding after the batch's longest text.

    open_clip runs every text through the whole context (77 positions for most models) although
    captions use a dozen. In a causal text tower pooled at the end token no position attends to a
    later one, so the padding after the longest text cannot change any text's features: cutting it
    gives the same vectors (to float rounding) for a fraction of the work. Other towers (SigLIP's,
    HF ones) run as they are. The cut path is checked once per model against encode_text itself."""
    used = int((tokens != 0).any(0).nonzero().max()) + 1 if tokens.numel() and (tokens != 0).any() else 0
    if not _trimmable(model) or not 0 < used < tokens.shape[1]:
        return model.encode_text(tokens, normalize=True)
    agrees = _TRIM_CHECKED.get(model)
    if agrees is None:  # first use: compare on two rows, fall back for good if they differ
        full = model.encode_text(tokens[:2], normalize=True)
        agrees = bool(torch.allclose(_encode_trimmed(model, tokens[:2], used), full, atol=1e-4))
        _TRIM_CHECKED[model] = agrees
    return _encode_trimmed(model, tokens, used) if agrees else model.encode_text(tokens, normalize=True)


_COUNTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # tokenizer -> {text: token count}
MAX_COUNTS = 100_000  # texts remembered per tokenizer


def _token_counts(tokenizer) -> dict:
    try:
        return _COUNTS.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that cannot be weakly referenced: count afresh each call
        return {}


def _count(tokenizer, text: str, counts: dict) -> int | None:
    if text not in counts:
        if len(counts) >= MAX_COUNTS:
            counts.clear()
        counts[text] = token_count(tokenizer, text)
    return counts[text]


def tokenize(tokenizer, texts: list[str], counts: dict | None = None) -> torch.Tensor:
    """`tokenizer(texts)`, and each text's full token count into `counts`, tokenizing each text once.

    open_clip's BPE tokenizer (without a reduction mask) is run as its own __call__ runs it, on the
    ids its `encode` returns, so the count costs nothing; other tokenizers are called as they are
    and their counts taken by `token_count` (a second pass)."""
    if counts is None:
        counts = {}
    plain_bpe = hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id") and \
        getattr(tokenizer, "reduction_fn", None) is None and getattr(tokenizer, "context_length", None)
    if not plain_bpe:
        for t in texts:
            _count(tokenizer, t, counts)
        return tokenizer(texts)
    ctx, sot, eot = tokenizer.context_length, tokenizer.sot_token_id, tokenizer.eot_token_id
    out = torch.zeros(len(texts), ctx, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [sot] + tokenizer.encode(text) + [eot]
        counts[text] = len(ids)
        if len(ids) > ctx:  # open_clip truncates and ends the row with the end token
            ids = ids[:ctx]
            ids[-1] = eot
        out[row, :len(ids)] = torch.tensor(ids)
    return out


def token_count(tokenizer, text: str) -> int | None:
    """Tokens `text` needs, start and end tokens included; None when the tokenizer is unknown."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id"):  # open_clip's BPE tokenizer
        return len(tokenizer.encode(text)) + 2
    inner = getattr(tokenizer, "tokenizer", None)  # open_clip's HFTokenizer / SigLipTokenizer wrap one
    if callable(inner):
        clean = getattr(tokenizer, "clean_fn", lambda s: s)
        return len(inner(clean(text))["input_ids"])
    return None


def _image_list(images) -> tuple[list, bool, dict]:
    """(sources, from_folder, unlisted) for any accepted `images` argument; `unlisted` maps the
    index of each subfolder that could not be listed to the reason."""
    if isinstance(images, (str, os.PathLike)) and os.fspath(images) in ("", b""):  # Path("") is "."
        raise ValueError("encode_images: images is an empty path; give an image file, a folder, "
                         "or a list of paths, PIL images or arrays")
    if isinstance(images, (str, os.PathLike)) and Path(images).expanduser().is_dir():
        root, errors = Path(images).expanduser(), []
        files = list_images(root, errors)
        if not files and not errors:
            raise BadImageError(images, f"no image files in this folder (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        sources = sorted(files + [d for d, _ in errors], key=lambda p: p.relative_to(root).as_posix())
        reasons = dict(errors)
        return sources, True, {i: reasons[p] for i, p in enumerate(sources) if p in reasons}
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return [images], False, {}
    if isinstance(images, np.ndarray):  # one HxW or HxWxC image, or a stack N x H x W x C (see load_image)
        return (list(images) if images.ndim == 4 else [images]), False, {}
    return list(images), False, {}


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, which a container or taskset narrows)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _workers(n_items: int) -> int:
    """Threads for reading images: one per usable core, at most 4, none for a handful of images."""
    cores = usable_cores()
    return 0 if n_items < 8 or cores < 2 else min(4, cores)


def _reading_threads(workers: int) -> ThreadPoolExecutor:
    """A pool of `workers` threads whose torch ops run on one OpenMP thread each (the calling
    thread's count is untouched). Preprocessing one 224 px image in parallel saves nothing, and a
    thread doing it gets an OpenMP team of its own: while such threads were alive, the model's
    forward on the calling thread ran 5-14 % slower (ViT-B-32, 2 cores, measured; likely libgomp
    cutting its barrier spin-waits once it manages more threads than cores)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="clipspace-load", initializer=_torch_on_one_thread)


_OPENMP = None  # threadpoolctl's handle on the OpenMP runtime torch loaded, found once


def _torch_on_one_thread() -> None:
    global _OPENMP
    torch.get_num_threads()  # torch sets a new thread's OpenMP count on its first call: let it, then override
    if _OPENMP is None:
        _OPENMP = ThreadpoolController().select(user_api="openmp")
    _OPENMP.limit(limits=1)  # omp_set_num_threads(1): this thread's own setting, by the OpenMP spec


class _ahead:
    """Run `fn` over `batches` one batch ahead of the consumer, on `workers` threads (per item of
    a batch, or per batch with per_item=False); iterate to get each batch's results in order.
    `ahead_if(results)` (optional) says whether a batch leaves the consumer work to overlap: the
    next batch is read ahead only after one that does, else it runs on the consumer's thread when
    asked for (a rerun whose every vector is cached has nothing to overlap, and handing each batch
    between threads would cost more than it saves). workers=0 runs everything lazily on the
    calling thread. Used as a context manager so that an exception in the consumer cancels what
    is queued."""

    def __init__(self, fn, batches, workers: int, per_item: bool = True, ahead_if=None):
        self.fn, self.batches, self.per_item, self.ahead_if = fn, batches, per_item, ahead_if
        self.pool = _reading_threads(workers) if workers > 0 else None

    def _run(self, batch):
        return [self.fn(x) for x in batch] if self.per_item else self.fn(batch)

    def _submit(self, batch):
        if self.per_item:
            return [self.pool.submit(self.fn, x) for x in batch]
        return self.pool.submit(self.fn, batch)

    def __iter__(self):
        queued = None
        for k, batch in enumerate(self.batches):
            if queued is None:
                results = self._run(batch)
            else:
                results = [f.result() for f in queued] if self.per_item else queued.result()
            queued = None
            if self.pool is not None and k + 1 < len(self.batches) and (self.ahead_if is None or self.ahead_if(results)):
                queued = self._submit(self.batches[k + 1])  # the next batch starts while this one is consumed
            yield results

    def __enter__(self):
        return iter(self)

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return False


def _dtype(clip) -> str:
    return str(next(clip.model.parameters()).dtype)


def _writer(store: VectorCache | None):
    """`put_many([(key, vector), ...])` into `store` for one call: a full or read-only disk must not
    cost the user their embeddings, and warns once per call, not once per batch."""
    failed = []

    def put_many(items) -> None:
        if store is None or not items:
            return
        try:
            store.put_many(items)
        except (OSError, sqlite3.Error) as e:
            if not failed:
                failed.append(e)
                _warn(f"could not write the embedding cache {store.path} ({type(e).__name__}: {e}); the "
                      "embeddings are returned but not cached")
    return put_many
