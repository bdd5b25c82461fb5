"""Corpora: a SOURCE of images embedded to parquet shards (`embed`), opened as one memory-mapped
array with its table (`Corpus.open`), with incremental PCA and a faiss nearest-neighbour index.

    from clipspace.corpus import embed, Corpus
    embed("photos/", "corpus/")                      # local engine; engine="ray" for Ray Data
    corpus = Corpus.open("corpus/")
    corpus.embeddings, corpus.table                  # (N, D) memmap of good rows, aligned table
    scores, rows = corpus.neighbours("a red circle", k=10)

See docs/corpus.md.
"""
from __future__ import annotations

from clipspace.corpus.embed import ENGINES, EmbedReport, embed
from clipspace.corpus.shards import CorpusMismatchError

__all__ = ["embed", "EmbedReport", "ENGINES", "CorpusMismatchError", "Corpus"]


def __getattr__(name: str):
    if name == "Corpus":  # faiss and sklearn load only when a corpus is opened
        from clipspace.corpus.corpus import Corpus
        return Corpus
    raise AttributeError(f"module 'clipspace.corpus' has no attribute {name!r}")
