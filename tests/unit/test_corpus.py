"""Corpora on the local engine: shards, reasons, resume, Corpus.open, PCA, faiss, probes, the CLI.

References: `encode_images` itself (the rows a shard must hold), `load_image`'s BadImageError (the
reasons), pandas / pyarrow (the shards must read as a table), scikit-learn PCA and numpy brute
force (the incremental PCA and the index).
"""
import os
from contextlib import nullcontext

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipspace import cli, world
from clipspace.corpus import Corpus, CorpusMismatchError, embed, shards
from clipspace.corpus.sources import read_source
from clipspace.embedding import encode_images
from clipspace.errors import BadImageError
from clipspace.images import list_images, load_image

N_WORLD = 50


def make_images(folder, n: int, size: int = 64):
    """`n` world scenes as PNG and JPEG, plus the odd and the bad files: returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(world.mixed_scenes(n)):
        s.render(size).save(folder / (f"w{i:03d}.png" if i % 2 else f"w{i:03d}.jpg"), quality=90)
    ok = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    ok.save(folder / "full.png")
    (folder / "cut.png").write_bytes((folder / "full.png").read_bytes()[:2000])  # truncated PNG
    (folder / "empty.jpg").write_bytes(b"")  # 0 bytes
    (folder / "text.jpg").write_text("this is not an image\n")  # text named .jpg
    Image.fromarray(np.array([[0, 25700, 65535, 30000]] * 4, np.uint16)).save(folder / "g16.png")  # 16-bit
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)  # CMYK JPEG
    Image.new("RGBA", (20, 20), (255, 0, 0, 128)).save(folder / "alpha.png")
    os.symlink(folder / "nowhere.png", folder / "dangling.png")
    (folder / "sub").mkdir(exist_ok=True)
    world.mixed_scenes(1)[0].render(size).save(folder / "sub" / "deep.png")
    return folder


def expected_reason(path):
    try:
        load_image(path)
    except BadImageError as e:
        return e.reason
    return None


BAD = {"cut.png": "truncated", "empty.jpg": "empty file", "text.jpg": "not an image", "dangling.png": "dangling"}


@pytest.fixture(scope="module")
def clip():
    import clipspace

    return clipspace.load_clip()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("imgs"), N_WORLD)


@pytest.fixture(scope="module")
def built(folder, clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "c"
    report = embed(folder, out, clip, shard_size=16, batch_size=8)
    return out, report


def read_all(out) -> pd.DataFrame:
    return pd.read_parquet(out)  # the folder itself reads as one table (derived files start with '_')


def test_every_path_once_and_bad_files_carry_their_reasons(folder, built):
    out, report = built
    listed = [os.path.abspath(p) for p in list_images(folder)]
    df = read_all(out)
    assert sorted(df["path"]) == sorted(listed) and df["path"].is_unique
    assert report.written == len(listed) == report.total and report.skipped == 0 and report.failed == len(BAD)
    for path, err in zip(df["path"], df["error"]):
        name = os.path.basename(path)
        if name in BAD:
            assert err == expected_reason(path) and BAD[name] in err
        else:
            assert pd.isna(err), (name, err)  # 16-bit, CMYK, RGBA, a JPEG, a subfolder: all good rows
    emb = df["embedding"]
    assert emb[df["error"].notna()].isna().all() and emb[df["error"].isna()].map(len).eq(128).all()


def test_shards_read_by_pyarrow_with_the_schema(built, clip):
    out, _ = built
    table = pads.dataset(out, format="parquet").to_table()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 128)
    ident = shards.identity_of(clip)
    assert set(table.column("model").cast("string").to_pylist()) == {ident.model_id}
    assert set(table.column("preprocess").cast("string").to_pylist()) == {ident.preprocess}
    assert ident.model_id == f"clipspace-tiny@{clip.weights_id}"
    assert len(shards.list_shards(out)) == -(-table.num_rows // 16)


def test_shards_read_by_duckdb_as_one_table(built):
    import duckdb  # a dev dependency (`make test` installs it): a missing one fails, never skips
    out, _ = built
    con = duckdb.connect()
    rows = con.execute(f"SELECT path, error, embedding FROM read_parquet('{out}/*.parquet') ORDER BY path").fetchall()
    ref = read_all(out).sort_values("path").reset_index(drop=True)
    assert [r[0] for r in rows] == ref["path"].tolist()
    assert [r[1] for r in rows] == [None if pd.isna(e) else e for e in ref["error"]]
    for (_, err, emb), want in zip(rows, ref["embedding"]):
        if err is None:  # float32 values through DuckDB's FLOAT[128]: the same numbers
            assert np.array_equal(np.asarray(emb, dtype=np.float32), want)
        else:
            assert emb is None
    n_bad = con.execute(f"SELECT count(*) FROM read_parquet('{out}/*.parquet') WHERE error IS NOT NULL").fetchone()[0]
    assert n_bad == len(BAD)


def test_rows_equal_encode_images(built, clip):
    out, _ = built
    for f in shards.list_shards(out):
        df = pq.read_table(f).to_pandas()
        with pytest.warns(UserWarning, match="could not be read") if df["error"].notna().any() else nullcontext():
            ref = encode_images(clip, df["path"].tolist(), strict=False, cache=False, batch_size=8, progress=False)
        good = df[df["error"].isna()]
        assert good["path"].tolist() == [str(s) for s in ref.sources]
        assert np.array_equal(np.stack(good["embedding"].to_list()), np.asarray(ref))  # exactly, bit for bit
        assert sorted(df[df["error"].notna()]["error"]) == sorted(r for _, r in ref.failures)
    corpus = Corpus.open(out)
    whole = encode_images(clip, corpus.paths, cache=False, batch_size=8, progress=False)
    np.testing.assert_allclose(np.asarray(corpus), whole, atol=1e-6)  # other batches: float rounding only


def test_resume_writes_only_what_is_missing(folder, clip, tmp_path):
    out = tmp_path / "c"
    first = embed(folder, out, clip, shard_size=16, batch_size=8)
    files = shards.list_shards(out)
    lost = files[1:3]  # a crash that lost two shards and left a half-written one
    lost_rows = sum(pq.read_metadata(f).num_rows for f in lost)
    for f in lost:
        f.unlink()
    (out / ".tmp-part-0001-000009.parquet.x1").write_bytes(b"PAR1 half a shard")
    kept = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in shards.list_shards(out)}
    again = embed(folder, out, clip, shard_size=16, batch_size=8)
    assert again.written == lost_rows and again.skipped == first.written - lost_rows
    assert not list(out.glob(".tmp-*"))
    assert {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in shards.list_shards(out) if f.name in kept} == kept
    df = read_all(out)
    assert df["path"].is_unique and len(df) == first.written
    assert embed(folder, out, clip, shard_size=16).written == 0  # finished: nothing to do


def test_another_model_cannot_share_the_folder(built, tiny_clip):
    out, _ = built
    with pytest.raises(CorpusMismatchError, match="model"):
        embed(out.parent, out, tiny_clip)  # random weights: another embedding space


def test_corpus_open_memory_maps_a_key_of_the_shard_set(built, folder, clip, tmp_path):
    out, _ = built
    corpus = Corpus.open(out)
    df = read_all(out)
    good = df[df["error"].isna()]
    assert isinstance(corpus.embeddings, np.memmap) and corpus.shape == (len(good), 128) and len(corpus) == len(good)
    assert corpus.table["path"].tolist() == good["path"].tolist() and corpus.table["error"].isna().all()
    assert np.array_equal(np.asarray(corpus), np.stack(good["embedding"].to_list()))
    assert sorted(corpus.failures["path"].map(os.path.basename)) == sorted(BAD)
    npy = list(out.glob("_embeddings-*.npy"))
    assert len(npy) == 1 and corpus.key in npy[0].name
    # a new shard (new files in the source) gives a new key: the old array is never served
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(out, copy, symlinks=True)
    Image.new("RGB", (32, 32), (0, 0, 255)).save(folder / "zz_new.png")
    try:
        assert embed(folder, copy, clip, shard_size=16).written == 1
        bigger = Corpus.open(copy)
        assert len(bigger) == len(corpus) + 1 and bigger.key != corpus.key
        assert [p.name for p in copy.glob("_embeddings-*.npy")] == [f"_embeddings-{bigger.key}.npy"]
        assert np.array_equal(np.asarray(bigger)[:len(corpus)], np.asarray(corpus))
    finally:
        (folder / "zz_new.png").unlink()


def test_incremental_pca_spans_sklearns_subspace(built):
    from sklearn.decomposition import PCA, IncrementalPCA

    corpus = Corpus.open(built[0])
    x = np.asarray(corpus, dtype=np.float64)
    ipca = corpus.pca(4, rows=16)  # three partial_fits over the memmap
    same = IncrementalPCA(4, batch_size=16).fit(np.asarray(corpus))  # sklearn on the whole array, same batches
    np.testing.assert_allclose(ipca.components_, same.components_, atol=1e-5)
    ref = PCA(4).fit(x)
    cosines = np.linalg.svd(ipca.components_[:2] @ ref.components_[:2].T, compute_uv=False)  # principal angles
    assert cosines.min() > 0.95, cosines  # batches of 16 rows keep 4 directions each: close, not exact
    np.testing.assert_allclose(ipca.mean_, ref.mean_, atol=1e-6)
    np.testing.assert_allclose(ipca.explained_variance_[:2], ref.explained_variance_[:2], rtol=0.05)
    exact = corpus.pca(4, rows=len(corpus))  # one chunk: the full PCA, up to sign
    np.testing.assert_allclose(np.abs(exact.components_ @ ref.components_.T), np.eye(4), atol=1e-4)


def synthetic_corpus(out, n=4000, d=32, seed=0):
    """A corpus folder of random unit vectors written with the shard writer (no model needed)."""
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ident = shards.Identity("synthetic@none", "none", d, "synthetic", None)
    out.mkdir()
    shards.check_or_write_manifest(out, ident)
    for k, s in enumerate(range(0, n, 1000)):
        paths = [f"/v/{i}" for i in range(s, s + 1000)]
        shards.write_shard(out, shards.shard_name(1, k), shards.rows_table(paths, x[s:s + 1000], [None] * 1000, ident))
    return x


def test_faiss_neighbours_match_brute_force(tmp_path):
    x = synthetic_corpus(tmp_path / "s")
    corpus = Corpus.open(tmp_path / "s")
    q = np.random.default_rng(1).standard_normal((20, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    truth = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    scores, rows = corpus.neighbours(q, k=10)  # 4000 rows: the exact flat index
    assert np.array_equal(rows, truth)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, truth, 1), atol=1e-5)
    assert list(tmp_path.joinpath("s").glob("_index-flat-*.faiss"))
    ivf = corpus.index("ivf", nlist=50, nprobe=50)  # every list probed: exact again
    from clipspace.corpus.index import search

    assert np.array_equal(search(ivf, q, 10)[1], truth)


def test_text_query_neighbours(built, clip):
    corpus = Corpus.open(built[0])
    scores, rows = corpus.neighbours("a red circle", k=5)
    t = np.asarray(clip.encode_texts(["a red circle"]))
    sims = np.asarray(corpus) @ t[0]
    assert np.array_equal(rows[0], np.argsort(-sims, kind="stable")[:5])
    assert corpus.clip().weights_id == clip.weights_id  # the manifest reloads the same model


def test_zero_shot_and_probes_take_a_corpus(built, clip):
    from clipspace.probes.factors import probe_accuracy
    from clipspace.probes.zero_shot import ZeroShotClassifier, WORLD_TEMPLATES, zero_shot

    corpus = Corpus.open(built[0])
    arr = np.array(corpus.embeddings)
    shapes = list(world.SHAPES)
    a = zero_shot(clip, corpus, shapes, WORLD_TEMPLATES["shape"])
    b = zero_shot(clip, arr, shapes, WORLD_TEMPLATES["shape"])
    assert np.array_equal(a.probs, b.probs) and a.probs.shape == (len(corpus), len(shapes))
    zsc = ZeroShotClassifier.from_clip(clip, shapes, WORLD_TEMPLATES["shape"])
    assert np.array_equal(zsc.classify(corpus).probs, a.probs)
    # a linear probe: the first object's shape of each world scene, read from the corpus rows
    scenes = world.mixed_scenes(N_WORLD)
    names = corpus.table["path"].map(os.path.basename)
    keep = names.str.match(r"w\d{3}\.").to_numpy()
    y = [scenes[int(n[1:4])].objects[0].shape if scenes[int(n[1:4])].objects else "none" for n in names[keep]]
    assert probe_accuracy(np.asarray(corpus)[keep], y, folds=3) == probe_accuracy(arr[keep], y, folds=3)


def test_sources_text_file_and_parquet(folder, built, clip, tmp_path):
    listed = [os.path.abspath(p) for p in list_images(folder)]
    txt = folder.parent / "list.txt"
    rel = [os.path.relpath(p, txt.parent) for p in listed]
    txt.write_text("# my images\n\n" + "\n".join(rel + rel[:3]) + "\n")
    src = read_source(txt)
    assert src.paths == listed and src.duplicates == 3
    pq.write_table(pa.table({"path": listed, "label": range(len(listed))}), tmp_path / "src.parquet")
    assert read_source(tmp_path / "src.parquet").paths == listed
    with pytest.raises(ValueError, match="no 'file' column"):
        read_source(tmp_path / "src.parquet", column="file")
    out = tmp_path / "from-text"
    embed(txt, out, clip, shard_size=16, batch_size=8)
    a, b = read_all(out), read_all(built[0])
    assert a["path"].tolist() == b["path"].tolist() and a["error"].fillna("").tolist() == b["error"].fillna("").tolist()


def test_cli_round_trip(folder, built, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["embed", str(folder), "--out", str(out), "--shard-size", "16", "--batch-size", "8"]) == 0
    assert "wrote" in capsys.readouterr().out
    a, b = Corpus.open(out), Corpus.open(built[0])
    assert a.paths == b.paths and np.array_equal(np.asarray(a), np.asarray(b))
    assert cli.main(["embed", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err
