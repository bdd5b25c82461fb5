"""Training data from your own files: images for a decoder, (image, caption) pairs for a prior.

Image sources (`read_image_source`), for `python -m clipspace.train decoder --images SOURCE`:
- a folder: its image files, recursively, as `encode_images` lists them;
- a file list: a text file of image paths, one a line (relative ones from the list's folder; blank
  lines and lines starting with '#' skipped);
- a parquet: a `path` column and, optionally, `embedding` (list of floats: the CLIP image embedding
  already computed, so the CLIP need not run again). `write_embeddings` writes one, with the CLIP's
  name, tag, weights id and size in the file's metadata, which the trainers then record as theirs.

Pair sources (`read_pair_source`), for `python -m clipspace.train prior --pairs SOURCE`:
- a folder where each image has a sidecar caption of the same stem (`cat.jpg` + `cat.txt`);
- a CSV or TSV with a header: a path column (`path`, `image`, `file` or `filename`) and a caption
  column (`caption` or `text`);
- a parquet with the same columns and, optionally, `image_embedding` and `text_embedding`.

Every image goes through clipspace's one loader (`clipspace.images`), so a bad file is skipped with
the reason `encode_images` gives, logged and kept in `.failures`; nothing else in its batch is lost.
Embeddings come from `encode_images(strict=False)` (batched, cached on disk by file content, so a
rerun or a resumed run does not run the CLIP again) and `encode_texts`.

Pixels are held in memory as uint8, centre-cropped to a square (as CLIP's preprocess sees the image)
at the decoder's size plus a 1/8 margin for random crops: 64 px images cost 15.6 kB each, so 100,000
of them take 1.6 GB. A larger set needs a streaming loader, which this is not.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clipspace.errors import BadImageError, InvalidArgumentError
from clipspace.images import IMAGE_EXTENSIONS, list_images, load_image

log = logging.getLogger("clipspace.train.data")

META_KEY = b"clipspace"  # parquet schema metadata: the CLIP that made the embeddings (JSON)
PATH_COLUMNS = ("path", "image", "file", "filename")
CAPTION_COLUMNS = ("caption", "text")
AUGMENTS = ("none", "crop", "crop+flip")
AUGMENT_NOTES = {  # for the card
    "none": "Each image's centre square, as stored; z_i of the whole image.",
    "crop": "A random size x size window of the centre square stored at size + size // 8 (at most 1/9 of the side "
            "cut), a fresh window every time an image is drawn; z_i is of the whole image.",
    "crop+flip": "A random size x size window of the centre square stored at size + size // 8, mirrored left-right "
                 "half of the time; z_i is of the whole, unmirrored image (CLIP reads most photos the same mirrored, "
                 "not written words).",
}


@dataclass
class ImageTable:
    """Image paths of a source, with embeddings when the source carries them (rows line up)."""

    paths: list[Path]
    embeddings: np.ndarray | None = None
    clip: dict = field(default_factory=dict)  # {"clip_model", "clip_pretrained", "clip_weights_id", ...} if known
    failures: list = field(default_factory=list)  # (source, reason) found while listing
    captions: list[str] | None = None
    text_embeddings: np.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Reading sources
# ---------------------------------------------------------------------------------------------
def _resolve(base: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else base / q


def _vectors(column, name: str, source) -> np.ndarray:
    try:
        z = np.asarray(column.to_pylist(), dtype=np.float32)
    except ValueError:
        raise InvalidArgumentError(f"{source}: column {name!r} must hold equal-length lists of floats") from None
    if z.ndim != 2:
        raise InvalidArgumentError(f"{source}: column {name!r} must hold equal-length lists of floats, got shape {z.shape}")
    return z


def _read_parquet(path: Path, caption_needed: bool) -> ImageTable:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    cols = table.column_names
    pcol = next((c for c in PATH_COLUMNS if c in cols), None)
    if pcol is None:
        raise InvalidArgumentError(f"{path}: no path column (one of {PATH_COLUMNS}); its columns are {cols}")
    meta = json.loads((table.schema.metadata or {}).get(META_KEY, b"{}"))
    out = ImageTable([_resolve(path.parent, p) for p in table.column(pcol).to_pylist()], clip=meta)
    for col, attr in (("embedding", "embeddings"), ("image_embedding", "embeddings"),
                      ("text_embedding", "text_embeddings")):
        if col in cols:
            setattr(out, attr, _vectors(table.column(col), col, path))
    ccol = next((c for c in CAPTION_COLUMNS if c in cols), None)
    if ccol is not None:
        out.captions = [str(c) for c in table.column(ccol).to_pylist()]
    elif caption_needed:
        raise InvalidArgumentError(f"{path}: no caption column (one of {CAPTION_COLUMNS}); its columns are {cols}")
    return out


def read_image_source(source) -> ImageTable:
    """The images of a decoder source: a folder, a file list or a parquet (see the module docstring)."""
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        errors: list = []
        files = list_images(path, errors)
        if not files:
            raise BadImageError(path, f"no image files in this folder (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        return ImageTable(files, failures=errors)
    if not path.is_file():
        raise InvalidArgumentError(f"images={str(source)!r}: no such folder or file; give a folder of images, "
                                   "a text file of image paths or a parquet with a 'path' column")
    if path.suffix.lower() == ".parquet":
        return _read_parquet(path, caption_needed=False)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise InvalidArgumentError(f"images={str(source)!r} is one image; give its folder, a file list or a parquet")
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise InvalidArgumentError(f"{path}: not a text file of image paths (nor a folder or .parquet)") from None
    paths = [_resolve(path.parent, s.strip()) for s in lines if s.strip() and not s.lstrip().startswith("#")]
    if not paths:
        raise InvalidArgumentError(f"{path}: the file list names no images")
    return ImageTable(paths)


def read_pair_source(source) -> ImageTable:
    """The (image, caption) pairs of a prior source: a folder with sidecar .txt captions, a CSV/TSV
    or a parquet (see the module docstring). Images without a caption are listed in `.failures`."""
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        errors: list = []
        files, caps, kept = list_images(path, errors), [], []
        for f in files:
            side = f.with_suffix(".txt")
            if side.is_file():
                kept.append(f)
                caps.append(side.read_text().strip())
            else:
                errors.append((f, f"no caption file {side.name} next to it"))
        if not kept:
            raise InvalidArgumentError(f"{path}: no image with a sidecar caption (cat.jpg + cat.txt) in this folder")
        return ImageTable(kept, captions=caps, failures=errors)
    if not path.is_file():
        raise InvalidArgumentError(f"pairs={str(source)!r}: no such folder or file; give a folder with sidecar "
                                   ".txt captions, a CSV/TSV or a parquet with path and caption columns")
    if path.suffix.lower() == ".parquet":
        return _read_parquet(path, caption_needed=True)
    delim = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter=delim))
    cols = list(rows[0]) if rows else []
    pcol = next((c for c in PATH_COLUMNS if c in cols), None)
    ccol = next((c for c in CAPTION_COLUMNS if c in cols), None)
    if pcol is None or ccol is None:
        raise InvalidArgumentError(f"{path}: needs a header with a path column (one of {PATH_COLUMNS}) and a caption "
                                   f"column (one of {CAPTION_COLUMNS}); found {cols}")
    return ImageTable([_resolve(path.parent, r[pcol]) for r in rows], captions=[r[ccol] or "" for r in rows])


# ---------------------------------------------------------------------------------------------
# Embedding and loading
# ---------------------------------------------------------------------------------------------
def clip_info(clip) -> dict:
    """What a decoder or prior records of the CLIP it was trained on."""
    return {"clip_model": str(clip.name), "clip_pretrained": clip.pretrained, "clip_weights_id": clip.weights_id,
            "clip_embed_dim": int(clip.embed_dim)}


def embed_paths(clip, paths: list[Path], batch_size: int = 64, progress: bool | None = None):
    """(rows, kept, failures): CLIP image embeddings of the readable `paths` (rows line up with `kept`,
    indices into `paths`) and (path, reason) for the rest. Batched and cached by `encode_images`."""
    emb = clip.encode_images([str(p) for p in paths], batch_size=batch_size, strict=False, progress=progress)
    failed = {str(s) for s, _ in emb.failures}
    kept = [i for i, p in enumerate(paths) if str(p) not in failed]
    assert len(kept) == len(emb), "encode_images kept other rows than it reported"
    return np.asarray(emb), kept, list(emb.failures)


def _square_pixels(path, size: int):
    from clipspace.photos import square

    try:
        return np.asarray(square(load_image(path), size), dtype=np.uint8)
    except BadImageError as e:
        return e


def load_pixels(paths, size: int, workers: int | None = None) -> tuple[np.ndarray, list[int], list]:
    """(pixels (N, size, size, 3) uint8, kept indices, failures): each image's centre square at `size`."""
    from clipspace.embedding import usable_cores

    workers = min(4, usable_cores()) if workers is None else workers
    if workers > 1 and len(paths) > 8:
        with ThreadPoolExecutor(workers) as ex:
            results = list(ex.map(lambda p: _square_pixels(p, size), paths))
    else:
        results = [_square_pixels(p, size) for p in paths]
    kept = [i for i, r in enumerate(results) if not isinstance(r, BadImageError)]
    failures = [(r.source, r.reason) for r in results if isinstance(r, BadImageError)]
    arr = np.stack([results[i] for i in kept]) if kept else np.zeros((0, size, size, 3), np.uint8)
    return arr, kept, failures


def log_failures(failures, what: str = "images") -> None:
    if not failures:
        return
    log.warning("%d %s skipped:", len(failures), what)
    for src, reason in failures[:50]:
        log.warning("  skipped %s: %s", src, reason)
    if len(failures) > 50:
        log.warning("  ... and %d more (the run directory's data.json lists all)", len(failures) - 50)


def _check_embed_dim(z: np.ndarray, info: dict, source) -> None:
    want = info.get("clip_embed_dim")
    if want is not None and int(want) != z.shape[1]:
        raise InvalidArgumentError(f"{source}: embeddings are {z.shape[1]}-d but its metadata says the CLIP gives "
                                   f"{want}-d")


def resolve_clip(table: ImageTable, clip, clip_name: str | None, source) -> dict:
    """The CLIP record of a run on `table`: the loaded `clip`'s, else the parquet's metadata (with
    `clip_name`, if given, checked against it, or naming a parquet that has none)."""
    from clipspace.unclip.decoder import same_clip_name

    if clip is not None:
        info = clip_info(clip)
        have = table.clip.get("clip_model")
        if table.embeddings is not None and have and not same_clip_name(have, info["clip_model"]):
            raise InvalidArgumentError(f"{source} holds embeddings of {have!r}, not of the CLIP given "
                                       f"({info['clip_model']!r}); drop the embedding column or pass --clip {have}")
        return info
    if table.embeddings is None:
        raise InvalidArgumentError(f"{source} holds no embeddings, so a CLIP is needed: pass --clip NAME")
    info = dict(table.clip)
    if clip_name and info.get("clip_model") and not same_clip_name(clip_name, info["clip_model"]):
        raise InvalidArgumentError(f"{source} holds embeddings of {info['clip_model']!r}, not of {clip_name!r}")
    if clip_name:
        info["clip_model"] = clip_name
    if not info.get("clip_model"):
        raise InvalidArgumentError(f"{source} holds embeddings but does not say of which CLIP (no clipspace "
                                   "metadata): pass --clip NAME to record it (the CLIP is not run)")
    info["clip_embed_dim"] = int(table.embeddings.shape[1])
    return info


def check_named_clip(table: ImageTable, name: str | None, source) -> None:
    """A --clip given with a parquet of embeddings is not loaded, only checked against the CLIP the
    parquet names (a folder named after the architecture counts as that architecture)."""
    from clipspace.unclip.decoder import same_clip_name

    have = table.clip.get("clip_model")
    if name and name != "default" and have and not same_clip_name(Path(str(name)).name if os.sep in str(name) else name,
                                                                     have):
        raise InvalidArgumentError(f"{source} holds embeddings of {have!r}, not of --clip {name!r}; drop --clip "
                                   "(the parquet names its CLIP) or re-embed with this one")


# ---------------------------------------------------------------------------------------------
# The decoder's data
# ---------------------------------------------------------------------------------------------
class ImageSet:
    """Images at a decoder's size (uint8, a crop margin around them) and their CLIP image embeddings.

    Augmentation (`augment`), fixed for a run: "crop" takes a random size x size window of the image
    stored at size + size // 8 (the centre square, resized), "crop+flip" also mirrors half of them,
    "none" takes the centre window. z_i is the embedding of the whole, unmirrored image in every case
    (computed once): a window misses at most 1/9 of the side, and a mirror keeps what CLIP encodes
    of most photos (not of written words: use "crop" for images with text). Held-out batches always
    take the centre window, unmirrored."""

    def __init__(self, pixels: torch.Tensor, z: torch.Tensor, sources: list, size: int, augment: str = "crop+flip",
                 failures: list | None = None, clip: dict | None = None, source: str = ""):
        if augment not in AUGMENTS:
            raise InvalidArgumentError(f"augment={augment!r}; use one of {AUGMENTS}")
        self.pixels, self.z, self.sources, self.size, self.augment = pixels, z, list(sources), int(size), augment
        self.failures, self.clip, self.source = list(failures or []), dict(clip or {}), str(source)

    def __len__(self) -> int:
        return len(self.z)

    @property
    def margin(self) -> int:
        return int(self.pixels.shape[-1]) - self.size

    @classmethod
    def from_source(cls, source, size: int, clip=None, augment: str = "crop+flip", clip_name: str | None = None,
                    batch_size: int = 64, progress: bool | None = None) -> "ImageSet":
        """Read, embed (unless the source carries embeddings: then `clip` may be None) and load `source`."""
        table = read_image_source(source)
        info = resolve_clip(table, clip, clip_name, source)
        failures = list(table.failures)
        paths = table.paths
        if table.embeddings is not None:
            if len(table.embeddings) != len(paths):
                raise InvalidArgumentError(f"{source}: {len(table.embeddings)} embeddings for {len(paths)} paths")
            _check_embed_dim(table.embeddings, table.clip, source)
            z = table.embeddings
            log.info("%d images with precomputed %d-d embeddings of %s: the CLIP is not run", len(paths), z.shape[1],
                     info["clip_model"])
        else:
            z, kept, bad = embed_paths(clip, paths, batch_size, progress)
            failures += bad
            paths = [paths[i] for i in kept]
        stored = size + size // 8 if augment != "none" else size
        pixels, kept, bad = load_pixels(paths, stored)
        failures += bad
        log_failures(failures)
        if not kept:
            raise InvalidArgumentError(f"{source}: none of its images could be read ({len(failures)} skipped)")
        z = torch.from_numpy(np.ascontiguousarray(z[kept], dtype=np.float32))
        z = torch.nn.functional.normalize(z, dim=-1)  # unit norm, as the decoder is conditioned
        pix = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        return cls(pix, z, [str(paths[i]) for i in kept], size, augment, failures, info, str(source))

    def split(self, n: int, seed: int = 0) -> tuple["ImageSet", "ImageSet"]:
        """(train, held_out): n images set aside at random (seeded), the rest kept for training."""
        perm = np.random.default_rng(seed).permutation(len(self))
        held, train = np.sort(perm[:n]), np.sort(perm[n:])

        def part(idx):
            idx_t = torch.from_numpy(idx)
            return ImageSet(self.pixels[idx_t], self.z[idx_t], [self.sources[i] for i in idx], self.size,
                            self.augment, self.failures, self.clip, self.source)
        return part(train), part(held)

    def centre(self) -> torch.Tensor:
        """Every image's centre window in [-1, 1] (N, 3, size, size): the held-out view."""
        m = self.margin // 2
        return self.pixels[:, :, m:m + self.size, m:m + self.size].float() / 127.5 - 1.0

    def batch(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n (pixels in [-1, 1], z_i) drawn with replacement, augmented as `augment` says."""
        idx = rng.integers(0, len(self), n)
        s, m = self.size, self.margin
        if self.augment == "none" or m == 0:
            offs = np.full((n, 2), m // 2)
        else:
            offs = rng.integers(0, m + 1, (n, 2))
        flips = rng.random(n) < 0.5 if self.augment == "crop+flip" else np.zeros(n, bool)
        out = torch.empty((n, 3, s, s), dtype=torch.uint8)
        for k, (i, (oy, ox), f) in enumerate(zip(idx, offs, flips)):
            win = self.pixels[i, :, oy:oy + s, ox:ox + s]
            out[k] = win.flip(-1) if f else win
        return out.float() / 127.5 - 1.0, self.z[torch.from_numpy(idx)].clone()


# ---------------------------------------------------------------------------------------------
# The prior's data
# ---------------------------------------------------------------------------------------------
class PairSet:
    """(caption, image) pairs as CLIP embeddings (z_t, z_i), computed once; `.batch` as the world's PairPool."""

    def __init__(self, z_t: torch.Tensor, z_i: torch.Tensor, captions: list[str], sources: list,
                 failures: list | None = None, clip: dict | None = None, source: str = ""):
        self.z_t, self.z_i, self.captions, self.sources = z_t, z_i, list(captions), list(sources)
        self.failures, self.clip, self.source = list(failures or []), dict(clip or {}), str(source)

    def __len__(self) -> int:
        return len(self.z_i)

    @classmethod
    def from_source(cls, source, clip=None, clip_name: str | None = None, batch_size: int = 64,
                    progress: bool | None = None) -> "PairSet":
        table = read_pair_source(source)
        if clip is None and (table.embeddings is None or table.text_embeddings is None):
            raise InvalidArgumentError(f"{source} does not hold both image_embedding and text_embedding columns, so "
                                       "a CLIP is needed to embed the rest: pass --clip NAME")
        info = resolve_clip(table, clip, clip_name, source)
        failures, paths, caps = list(table.failures), table.paths, table.captions
        if table.embeddings is not None:
            _check_embed_dim(table.embeddings, table.clip, source)
            z_i, kept = table.embeddings, list(range(len(paths)))
        else:
            z_i, kept, bad = embed_paths(clip, paths, batch_size, progress)
            failures += bad
        if table.text_embeddings is not None:
            z_t = table.text_embeddings[kept]
        else:
            z_t = np.asarray(clip.encode_texts([caps[i] for i in kept], progress=progress))
        log_failures(failures, "pairs")
        if not kept:
            raise InvalidArgumentError(f"{source}: none of its images could be read ({len(failures)} skipped)")
        norm = lambda a: torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(a, np.float32)), dim=-1)  # noqa: E731
        return cls(norm(z_t), norm(z_i), [caps[i] for i in kept], [str(paths[i]) for i in kept], failures, info,
                   str(source))

    def split(self, n: int, seed: int = 0) -> tuple["PairSet", "PairSet"]:
        perm = np.random.default_rng(seed).permutation(len(self))

        def part(idx):
            idx = np.sort(idx)
            t = torch.from_numpy(idx)
            return PairSet(self.z_t[t], self.z_i[t], [self.captions[i] for i in idx], [self.sources[i] for i in idx],
                           self.failures, self.clip, self.source)
        return part(perm[n:]), part(perm[:n])

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(rng.integers(0, len(self), size))
        return self.z_t[idx], self.z_i[idx]


def held_out_count(n_total: int, asked: int) -> int:
    """Images or pairs set aside for the held-out curve: `asked`, at most a tenth of the set (at least
    one where there are 2 or more, so the curve is never measured on training data by surprise)."""
    if asked <= 0 or n_total < 2:
        return 0
    return max(1, min(asked, n_total // 10))


def split_held_out(full, asked: int, seed: int, val=None, val_source=None, unit: str = "images",
                   first: int = 64):
    """(train set, held-out set or None, the card's record of the split) for an ImageSet or PairSet:
    `val` (from --val-images / --val-pairs) when given, else `held_out_count` items set aside at random."""
    if val is not None:
        train_set, held, note = full, val, f"the {unit} of {val_source}"
    else:
        n = held_out_count(len(full), asked)
        train_set, held = full.split(n, seed=seed) if n else (full, None)
        note = (f"{n} {unit} set aside at random (seed {seed}), never trained on" if n else
                f"none set aside: the curve's held-out loss is on the first {min(first, len(full))} training {unit}")
    record = {"kept": len(train_set), "held_out": len(held) if held is not None else 0, "held_out_note": note,
              "held_out_sources": held.sources if held is not None else [],
              "skipped": [[str(s), r] for s, r in full.failures]}
    return train_set, held, record


# ---------------------------------------------------------------------------------------------
# Precomputing embeddings once
# ---------------------------------------------------------------------------------------------
def write_embeddings(clip, source, out, pairs: bool = False, batch_size: int = 64, progress: bool | None = None) -> Path:
    """Embed `source` once with `clip` and write a parquet (path, embedding; for pairs also caption and
    text_embedding) with the CLIP in its metadata, for `--images` / `--pairs`. Bad files are left out
    (logged); relative paths are kept as the source gave them, resolved from the parquet's folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = read_pair_source(source) if pairs else read_image_source(source)
    z, kept, bad = embed_paths(clip, table.paths, batch_size, progress)
    log_failures(list(table.failures) + bad)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cols = {"path": [str(Path(table.paths[i]).resolve()) for i in kept]}
    if pairs:
        caps = [table.captions[i] for i in kept]
        cols.update(caption=caps, image_embedding=[list(map(float, r)) for r in z],
                    text_embedding=[list(map(float, r)) for r in np.asarray(clip.encode_texts(caps, progress=progress))])
    else:
        cols["embedding"] = [list(map(float, r)) for r in z]
    t = pa.table(cols)
    t = t.replace_schema_metadata({META_KEY: json.dumps(clip_info(clip)).encode()})
    pq.write_table(t, out)
    log.info("%d embeddings of %s written to %s (%d skipped)", len(kept), clip.name, out, len(table.failures) + len(bad))
    return out


def main(argv=None) -> None:
    """`python -m clipspace.train embed`: embed a source once, for --images / --pairs."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m clipspace.train embed",
                                description="Embed an image or pair source once with a CLIP and write a parquet "
                                            "that `train decoder --images` / `train prior --pairs` read without "
                                            "running the CLIP again.")
    p.add_argument("--clip", default="default", help="'default', a load_clip name, or a model directory")
    p.add_argument("--pretrained", "--clip-pretrained", dest="clip_pretrained", default=None)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="a folder, a file list or a parquet of paths")
    src.add_argument("--pairs", help="a folder with sidecar .txt captions, a CSV/TSV or a parquet")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, required=True, help="the parquet to write")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    from clipspace.factory import load_clip

    clip = load_clip(None if a.clip == "default" else a.clip, pretrained=a.clip_pretrained, device=a.device)
    write_embeddings(clip, a.pairs or a.images, a.out, pairs=a.pairs is not None, batch_size=a.batch_size)
