"""What to embed: a SOURCE (a folder, a text file of paths, a parquet with a path column, or a list)
resolved to one ordered list of image paths, each once.

Paths are made absolute (`~` expanded, relative entries of a text file or parquet taken relative to
that file's folder), so a resumed run recognises rows already written whatever the working
directory, and every node of a cluster reads the same file (the files must be on a filesystem all
nodes see; clipspace reads local paths, not URLs). A path listed twice is embedded once (the first
place it appears) and counted in `Source.duplicates`.

A folder is listed by `clipspace.images.list_images` (recursive, sorted, hidden files skipped);
a subfolder that cannot be listed becomes a row of its own with the reason, exactly as
`encode_images(folder)` reports it in `.failures`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from clipspace.errors import InvalidArgumentError
from clipspace.images import list_images

PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class Source:
    """The resolved SOURCE: `paths` in order, `known_errors` (path -> reason) for entries already
    known to be unreadable before any file is opened, and what was dropped."""

    paths: list[str]
    known_errors: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0
    description: str = ""

    def __len__(self) -> int:
        return len(self.paths)


def _absolute(p: str | os.PathLike, base: Path | None = None) -> str:
    p = Path(os.fspath(p)).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return os.path.abspath(p)  # not resolve(): a symlink stays the path the user gave


def _unique(paths: list[str]) -> tuple[list[str], int]:
    seen, out = set(), []
    for p in paths:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out, len(paths) - len(out)


def read_source(source, column: str = "path") -> Source:
    """Resolve `source` to a `Source`. `column`: the path column of a parquet source."""
    if isinstance(source, Source):
        return source
    if isinstance(source, (str, os.PathLike)):
        if os.fspath(source) in ("", b""):
            raise InvalidArgumentError("source is an empty path; give a folder of images, a text file of paths "
                                       "(one a line) or a parquet file with a 'path' column")
        path = Path(source).expanduser()
        if path.is_dir():
            errors: list = []
            files = list_images(path, errors)
            paths = sorted([*files, *(d for d, _ in errors)], key=lambda p: p.relative_to(path).as_posix())
            reasons = {os.path.abspath(d): r for d, r in errors}
            return Source([os.path.abspath(p) for p in paths], reasons, 0, f"folder {path}")
        if not path.exists():
            raise InvalidArgumentError(f"source {source}: no such folder or file; give a folder of images, a text "
                                       "file of paths (one a line) or a parquet file with a 'path' column")
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return _from_parquet(path, column)
        return _from_text(path)
    if isinstance(source, (list, tuple)):
        paths, dupes = _unique([_absolute(p) for p in source])
        return Source(paths, {}, dupes, f"a list of {len(source)} paths")
    raise InvalidArgumentError(f"source is a {type(source).__name__}; give a folder, a text file of paths, a parquet "
                               "file with a 'path' column, or a list of paths")


def _from_text(path: Path) -> Source:
    """One path a line; blank lines and lines starting with '#' are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidArgumentError(f"source {path} is not a UTF-8 text file of paths (one a line); a parquet "
                                   "source must end in .parquet") from None
    lines = [ln.strip() for ln in text.splitlines()]
    raw = [_absolute(ln, path.parent) for ln in lines if ln and not ln.startswith("#")]
    paths, dupes = _unique(raw)
    return Source(paths, {}, dupes, f"text file {path}")


def _from_parquet(path: Path, column: str) -> Source:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    if column not in names:
        raise InvalidArgumentError(f"source {path} has no {column!r} column (it has {names}); pass column= "
                                   "(--column on the command line) to name the one holding image paths")
    values = pq.read_table(path, columns=[column]).column(column).to_pylist()
    bad = [i for i, v in enumerate(values) if not isinstance(v, str) or not v]
    if bad:
        raise InvalidArgumentError(f"source {path}: column {column!r} has {len(bad)} empty or non-text entries "
                                   f"(first at row {bad[0]}); every row must hold a file path")
    paths, dupes = _unique([_absolute(v, path.parent) for v in values])
    return Source(paths, {}, dupes, f"parquet {path} (column {column!r})")
