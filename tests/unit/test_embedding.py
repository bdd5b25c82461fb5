"""encode_images / encode_texts: equal to open_clip's own calls, in order, robust to bad files,
honest about truncation, and cached on disk without ever returning a damaged entry."""
import contextlib
import ctypes
import dataclasses
import os
import sqlite3
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipspace.cache import clear_memory
from clipspace.embedding import Embeddings, encode_images, encode_texts
from clipspace.errors import BadImageError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPSPACE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def vit_clip(build_random_clip):
    """A second, different open_clip architecture (ViT towers, 224 px, 77 tokens), random weights."""
    return build_random_clip("ViT-S-32-alt", seed=1)


@pytest.fixture(params=["tiny", "vit"])
def any_clip(request, tiny_clip):
    return tiny_clip if request.param == "tiny" else request.getfixturevalue("vit_clip")


def pictures(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (30 + 7 * i, 50 - 3 * i, 3), dtype=np.uint8)) for i in range(n)]


def save_all(folder, images, names=None):
    paths = [folder / (names[i] if names else f"img{i}.png") for i in range(len(images))]
    for p, im in zip(paths, images):
        p.parent.mkdir(parents=True, exist_ok=True)
        im.save(p)
    return paths


def reference(clip, pil_images):
    """open_clip's own embedding: model.encode_image(preprocess(img)), L2-normalised."""
    with torch.inference_mode():
        z = clip.model.encode_image(torch.stack([clip.preprocess(im) for im in pil_images]))
    return (z / z.norm(dim=-1, keepdim=True)).numpy()


@contextlib.contextmanager
def forward_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    try:
        yield calls
    finally:
        handle.remove()


def cache_db(cache_dir) -> Path:
    """The one database the calls of a test wrote (one embedding space)."""
    (db,) = sorted((cache_dir / "vectors").glob("*.sqlite3"))
    return db


def cache_rows(cache_dir) -> list[tuple]:
    """(key, dim, checksum, vector) of every row, read with sqlite3 itself."""
    with contextlib.closing(sqlite3.connect(cache_db(cache_dir))) as con:
        return con.execute("SELECT key, dim, checksum, vector FROM vectors ORDER BY key").fetchall()


def edit_cache(cache_dir, sql, *params):
    with contextlib.closing(sqlite3.connect(cache_db(cache_dir))) as con, con:
        con.execute(sql, params)


def test_images_equal_open_clip(any_clip, tmp_path):
    ims = pictures(5)
    paths = save_all(tmp_path / "imgs", ims)
    arrays = [np.asarray(ims[0]), np.asarray(ims[1]) / 255.0, np.asarray(ims[2])[:, :, 0]]
    got = encode_images(any_clip, [*paths, ims[3], *arrays], batch_size=3)  # 3 batches: order across them
    expected_inputs = [Image.open(p).convert("RGB") for p in paths] + [ims[3], ims[0], ims[1],
                                                                      ims[2].getchannel(0).convert("RGB")]
    assert isinstance(got, Embeddings) and got.dtype == np.float32 and got.shape == (9, any_clip.embed_dim)
    np.testing.assert_allclose(got, reference(any_clip, expected_inputs), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)
    assert got.sources[:5] == paths and got.failures == []


def test_texts_equal_open_clip(any_clip):
    texts = ["a red circle", "two blue squares left of a star", "", "A PHOTO OF A DOG"]
    got = encode_texts(any_clip, texts, batch_size=3)
    with torch.inference_mode():
        z = any_clip.model.encode_text(any_clip.tokenizer(texts))
    np.testing.assert_allclose(got, (z / z.norm(dim=-1, keepdim=True)).numpy(), atol=1e-5)
    assert got.sources == texts and got.truncated == []
    assert encode_texts(any_clip, "a red circle").shape == (1, any_clip.embed_dim)  # one string is one text


def test_truncation_reported(tiny_clip):
    ctx = tiny_clip.context_length
    texts = ["a " * (ctx - 2), "a " * (ctx - 1), "short"]  # exactly fits; one token too long
    counts = (tiny_clip.tokenizer(texts, context_length=2 * ctx) != 0).sum(1).tolist()  # open_clip's own count
    assert counts == [ctx, ctx + 1, 3]
    with pytest.warns(UserWarning, match=rf"1 of 3 texts .* context of {ctx} tokens .* indices 1\b"):
        got = encode_texts(tiny_clip, texts)
    assert got.truncated == [1]


def bad_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "b_text.png").write_text("not an image")
    (folder / "c_empty.jpg").write_bytes(b"")
    good = folder / "x.png"
    pictures(1, seed=9)[0].save(good)
    (folder / "d_cut.png").write_bytes(good.read_bytes()[:200])
    good.unlink()
    return ["b_text.png", "c_empty.jpg", "d_cut.png"]


def test_folder_skips_bad_files_and_keeps_order(tiny_clip, tmp_path):
    ims = pictures(4)
    good = save_all(tmp_path / "f", ims, ["z.png", "a.png", "sub/a.png", "e.png"])
    bad = bad_files(tmp_path / "f")
    with pytest.warns(UserWarning, match=r"3 of 7 images could not be read") as w:
        got = encode_images(tiny_clip, tmp_path / "f", batch_size=2)
    assert all(name in str(w[0].message) for name in bad)
    order = [1, 3, 2, 0]  # sorted by relative path: a, e, sub/a, z
    assert got.sources == [good[i] for i in order]
    np.testing.assert_allclose(got, reference(tiny_clip, [ims[i] for i in order]), atol=1e-5)
    assert [s.name for s, _ in got.failures] == bad
    assert [r.split(" ")[0] for _, r in got.failures] == ["not", "empty", "truncated"]


def test_list_is_strict_unless_asked(tiny_clip, tmp_path):
    ims = pictures(2)
    a, b = save_all(tmp_path, ims)
    bad_files(tmp_path / "bad")
    bad = tmp_path / "bad" / "b_text.png"
    with pytest.raises(BadImageError, match="b_text.png: not an image"):
        encode_images(tiny_clip, [a, bad, b])
    with pytest.warns(UserWarning, match="1 of 3"):
        got = encode_images(tiny_clip, [a, bad, b], strict=False)
    assert got.sources == [a, b] and got.failures[0][0] == bad
    np.testing.assert_allclose(got, reference(tiny_clip, ims), atol=1e-5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadImageError, match="no image files"):
        encode_images(tiny_clip, tmp_path / "empty")


def test_cache_hit_does_not_run_the_model(tiny_clip, tmp_path, cache_dir):
    paths = save_all(tmp_path / "imgs", pictures(3))
    with forward_calls(tiny_clip.model.visual) as calls:
        first = encode_images(tiny_clip, paths)
    assert sum(calls) == 3 and len(cache_rows(cache_dir)) == 3
    with forward_calls(tiny_clip.model.visual) as calls:
        again = encode_images(tiny_clip, paths)
    assert calls == [] and np.array_equal(first, again) and again.sources == paths
    ims = pictures(2, seed=5)  # in-memory images: cached only when asked
    encode_images(tiny_clip, ims, cache=True)
    with forward_calls(tiny_clip.model.visual) as calls:
        encode_images(tiny_clip, ims)
        assert sum(calls) == 2
        encode_images(tiny_clip, ims, cache=True)
        assert sum(calls) == 2


def test_cache_follows_file_content(tiny_clip, tmp_path):
    path = save_all(tmp_path, pictures(1))[0]
    encode_images(tiny_clip, [path])
    new = pictures(1, seed=7)[0]
    new.save(path)
    np.testing.assert_allclose(encode_images(tiny_clip, [path]), reference(tiny_clip, [new]), atol=1e-5)


def test_damaged_cache_is_recomputed(tiny_clip, tmp_path, cache_dir):
    paths = save_all(tmp_path / "imgs", pictures(3))
    first = encode_images(tiny_clip, paths)
    (k0, _, _, v0), (k1, _, _, v1), _ = cache_rows(cache_dir)
    edit_cache(cache_dir, "UPDATE vectors SET vector = ? WHERE key = ?", v0[:50], k0)  # torn
    garbled = bytearray(v1)
    garbled[-1] ^= 0x55
    edit_cache(cache_dir, "UPDATE vectors SET vector = ? WHERE key = ?", bytes(garbled), k1)  # garbled payload
    clear_memory()  # a new process: this one still remembers the vectors it wrote
    with forward_calls(tiny_clip.model.visual) as calls, pytest.warns(UserWarning, match="2 damaged or misplaced"):
        again = encode_images(tiny_clip, paths)
    # recomputed in a batch of 2 instead of 3: equal up to BLAS summation order
    assert sum(calls) == 2
    np.testing.assert_allclose(again, first, rtol=0, atol=1e-6)
    clear_memory()
    with forward_calls(tiny_clip.model.visual) as calls:
        encode_images(tiny_clip, paths)
    assert calls == []  # the damaged entries were rewritten


def test_text_cache_opt_in(tiny_clip):
    texts = ["a red circle", "a blue star"]
    first = encode_texts(tiny_clip, texts, cache=True)
    with forward_calls(tiny_clip.model.token_embedding) as calls:
        assert np.array_equal(encode_texts(tiny_clip, texts, cache=True), first)
        assert calls == []
        encode_texts(tiny_clip, texts)
        assert calls == [2]


def test_no_cache_without_weights_id(build_random_clip, tmp_path, cache_dir):
    clip = build_random_clip(seed=2)
    clip.weights_id = ""
    encode_images(clip, save_all(tmp_path, pictures(1)))
    assert not cache_dir.exists()


def test_deterministic_and_derived_arrays_are_plain(tiny_clip):
    ims = pictures(3)
    a, b = encode_images(tiny_clip, ims), encode_images(tiny_clip, ims)
    assert np.array_equal(a, b)
    assert type(a @ b.T) is np.ndarray and a[:2].sources is None and len(a.sources) == 3


def test_progress_bar_only_for_long_work(tiny_clip, capsys):
    encode_images(tiny_clip, pictures(2), batch_size=1)
    assert "embedding images" not in capsys.readouterr().err
    encode_images(tiny_clip, pictures(3), batch_size=1)
    assert "embedding images" in capsys.readouterr().err


def test_tokenize_once_equals_open_clip(any_clip):
    from clipspace.embedding import tokenize

    ctx = any_clip.context_length
    texts = ["a red circle", "", "a " * (ctx - 2), "a " * (ctx - 1), "word " * (3 * ctx), "Ünïcödé &amp; café"]
    counts = {}
    got = tokenize(any_clip.tokenizer, texts, counts)
    assert torch.equal(got, any_clip.tokenizer(texts))  # same ids, truncation and end token as open_clip
    long = (any_clip.tokenizer(texts, context_length=4 * ctx) != 0).sum(1).tolist()  # open_clip's own count
    assert [counts[t] for t in texts] == long


def test_threads_read_ahead_without_changing_results(tiny_clip, tmp_path):
    ims = pictures(11, seed=3)
    paths = save_all(tmp_path / "imgs", ims)
    serial = encode_images(tiny_clip, paths, batch_size=4, workers=0, cache=False)
    threaded = encode_images(tiny_clip, paths, batch_size=4, workers=3, cache=False)
    assert np.array_equal(serial, threaded) and threaded.sources == paths
    bad_files(tmp_path / "bad")
    mixed = paths[:5] + [tmp_path / "bad" / "c_empty.jpg"] + paths[5:] + [tmp_path / "bad" / "b_text.png"]
    with pytest.raises(BadImageError, match="c_empty.jpg: empty"):  # the first bad one in order, as serially
        encode_images(tiny_clip, mixed, batch_size=4, workers=3, cache=False)
    with pytest.warns(UserWarning, match="2 of 13"):
        got = encode_images(tiny_clip, mixed, batch_size=4, workers=3, cache=False, strict=False)
    assert np.array_equal(got, serial) and got.sources == paths


def test_files_read_on_one_thread_or_many_give_the_same_rows_and_keys(tiny_clip, tmp_path, monkeypatch):
    import clipspace.embedding as embedding

    paths = save_all(tmp_path / "imgs", pictures(9, seed=5))
    bad_files(tmp_path / "bad")
    mixed = [tmp_path / "bad" / "c_empty.jpg"] + paths[:4] + [tmp_path / "bad" / "b_text.png"] + paths[4:]
    monkeypatch.setattr(embedding, "THREADED_READ_BYTES", 0)  # every file on the reading threads
    with pytest.warns(UserWarning, match="2 of 11"):  # a bad file first in a batch decides nothing
        threaded = encode_images(tiny_clip, mixed, batch_size=4, workers=2, strict=False)
    monkeypatch.setattr(embedding, "THREADED_READ_BYTES", 2 ** 62)  # every file on the batch's thread
    with forward_calls(tiny_clip.model.visual) as calls, pytest.warns(UserWarning, match="2 of 11"):
        serial = encode_images(tiny_clip, mixed, batch_size=4, workers=2, strict=False)
    assert calls == []  # the same keys: every vector the threaded call cached is found
    assert np.array_equal(serial, threaded) and serial.sources == threaded.sources == paths
    assert [r for _, r in serial.failures] == [r for _, r in threaded.failures]


def test_rerun_in_one_process_reads_no_files(tiny_clip, tmp_path, cache_dir):
    paths = save_all(tmp_path / "imgs", pictures(3))
    first = encode_images(tiny_clip, paths)
    edit_cache(cache_dir, "DELETE FROM vectors")  # the vectors this process wrote are remembered, not re-read
    with forward_calls(tiny_clip.model.visual) as calls:
        assert np.array_equal(encode_images(tiny_clip, paths), first)
    assert calls == []
    clear_memory()  # a new process has only the database: emptied, so it computes again
    with forward_calls(tiny_clip.model.visual) as calls:
        np.testing.assert_allclose(encode_images(tiny_clip, paths), first, atol=1e-6)
    assert sum(calls) == 3


def test_text_features_skip_padding_with_the_same_result(any_clip):
    from clipspace.embedding import text_features

    ctx = any_clip.context_length
    tokens = any_clip.tokenizer(["a red circle", "two blue squares left of a green star", "", "dog"])
    seen = []
    handle = any_clip.model.transformer.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    try:
        with torch.inference_mode():
            got = text_features(any_clip.model, tokens)
            full = any_clip.model.encode_text(tokens, normalize=True)
            long = any_clip.tokenizer(["word " * ctx, "a cat"])  # one row fills the context: nothing to cut
            got_long = text_features(any_clip.model, long)
            full_long = any_clip.model.encode_text(long, normalize=True)
    finally:
        handle.remove()
    used = int((tokens != 0).sum(1).max())
    assert used < ctx and used in seen  # the tower ran on the used positions only
    np.testing.assert_allclose(got.numpy(), full.numpy(), atol=2e-6)
    np.testing.assert_allclose(got_long.numpy(), full_long.numpy(), atol=0)


def test_empty_inputs_give_empty_embeddings(tiny_clip):
    for got in (encode_images(tiny_clip, []), encode_texts(tiny_clip, [])):
        assert isinstance(got, Embeddings) and got.shape == (0, tiny_clip.embed_dim) and got.dtype == np.float32
        assert got.sources == [] and got.failures == []


def test_empty_path_is_refused_not_read_as_the_current_folder(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Path("") is "."
    save_all(tmp_path, pictures(1))

    class Blank:  # a PathLike naming nothing (Path("") itself cannot: it is Path("."))
        def __fspath__(self):
            return ""

    for empty in ("", Blank()):
        with pytest.raises(ValueError, match="images is an empty path"):
            encode_images(tiny_clip, empty)
    with pytest.warns(UserWarning, match="1 of 2"):
        got = encode_images(tiny_clip, ["", tmp_path / "img0.png"], strict=False)
    assert got.shape == (1, tiny_clip.embed_dim) and got.failures == [("", "empty path (no file name given)")]


def test_arrays_one_grayscale_image_or_an_unambiguous_stack(tiny_clip, rng):
    gray = rng.random((30, 40))  # HxW float in [0, 1]: one image
    got = encode_images(tiny_clip, gray)
    expected = Image.fromarray(np.round(gray * 255).astype(np.uint8)).convert("RGB")
    assert got.shape == (1, tiny_clip.embed_dim)
    np.testing.assert_allclose(got, reference(tiny_clip, [expected]), atol=1e-5)
    stack = rng.integers(0, 256, (3, 30, 40), dtype=np.uint8)  # three HxW images, or one 3x30 image of 40 channels?
    with pytest.raises(BadImageError, match=r"pass a list of HxW arrays or an \(N, H, W, C\) array"):
        encode_images(tiny_clip, stack)
    np.testing.assert_allclose(encode_images(tiny_clip, stack[..., None]), encode_images(tiny_clip, list(stack)),
                               atol=1e-6)


def test_folder_reports_each_unreadable_entry_once_with_its_reason(tiny_clip, tmp_path):
    ims = pictures(3)
    good = save_all(tmp_path / "f", ims, ["b.png", "d.png", "sub/f.png"])
    f = tmp_path / "f"
    os.symlink("missing.png", f / "a_dangling.png")
    os.symlink("c_loop.png", f / "c_loop.png")
    os.mkfifo(f / "e_pipe.png")
    os.symlink("gone.png", f / ".hidden.png")  # hidden: skipped, as ever
    with pytest.warns(UserWarning, match="3 of 6 images could not be read"):
        got = encode_images(tiny_clip, f)
    assert got.failures == [(f / "a_dangling.png", "dangling symlink (points to missing.png)"),
                            (f / "c_loop.png", "symlink loop"), (f / "e_pipe.png", "not a regular file (a FIFO)")]
    assert got.sources == good
    np.testing.assert_allclose(got, reference(tiny_clip, ims), atol=1e-5)


@contextlib.contextmanager
def unreadable(*paths):
    """chmod 000 `paths`, and, for root (whom permissions never stop), check this thread's file
    access as an ordinary user's: setfsuid changes the filesystem user id of the calling thread only."""
    for p in paths:
        p.chmod(0)
    setfsuid = getattr(ctypes.CDLL(None), "setfsuid", None) if os.geteuid() == 0 else None
    try:
        if os.geteuid() == 0:
            if setfsuid is None or (setfsuid(65534), setfsuid(-1))[1] != 65534:  # setfsuid(-1) reads it back
                pytest.skip("running as root, which reads any file, and cannot take another filesystem uid")
        yield
    finally:
        if setfsuid is not None:
            setfsuid(0)
        for p in paths:
            p.chmod(0o755)  # so that the folder can be deleted


@pytest.fixture
def open_folder():
    """A folder other users may enter (tmp_path is inside one only its owner may)."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        yield Path(d)


def test_permission_denied_is_said_and_the_rest_kept(tiny_clip, open_folder):
    ims = pictures(2)
    good = save_all(open_folder, ims, ["a.png", "c.png"])
    save_all(open_folder, pictures(2, seed=4), ["b_secret.png", "d_locked/x.png"])
    secret, locked = open_folder / "b_secret.png", open_folder / "d_locked"
    with unreadable(secret, locked), pytest.warns(UserWarning, match="2 of 4 images could not be read"):
        got = encode_images(tiny_clip, open_folder, workers=0, cache=False)  # workers=0: on this thread
        with pytest.raises(BadImageError, match="b_secret.png: permission denied$"):
            encode_images(tiny_clip, [good[0], secret], workers=0, cache=False)
    assert got.failures == [(secret, "permission denied"), (locked, "permission denied: cannot list this folder")]
    assert got.sources == good
    np.testing.assert_allclose(got, reference(tiny_clip, ims), atol=1e-5)


def test_cache_row_of_another_input_is_not_served(tiny_clip, tmp_path, cache_dir):
    paths = save_all(tmp_path / "imgs", pictures(2))
    first = encode_images(tiny_clip, paths)
    (one, *_), (_, dim, check, vector) = cache_rows(cache_dir)
    edit_cache(cache_dir, "UPDATE vectors SET dim = ?, checksum = ?, vector = ? WHERE key = ?", dim, check, vector, one)
    clear_memory()  # a new process: it has only the database, where one key holds the other's valid row
    with forward_calls(tiny_clip.model.visual) as calls, pytest.warns(UserWarning, match="1 damaged or misplaced"):
        again = encode_images(tiny_clip, paths)
    assert calls == [1]  # the misplaced entry is a miss, recomputed
    np.testing.assert_allclose(again, first, rtol=0, atol=1e-6)
    clear_memory()
    with forward_calls(tiny_clip.model.visual) as calls:
        encode_images(tiny_clip, paths)
    assert calls == []  # and was rewritten


def test_cached_results_equal_uncached_exactly(any_clip, tmp_path):
    ims = pictures(7, seed=11)
    paths = save_all(tmp_path / "imgs", ims[:5])
    inputs = [paths[0], ims[5], paths[1], paths[2], ims[6], paths[3], paths[4]]  # files and in-memory images
    uncached = encode_images(any_clip, inputs, batch_size=3, cache=False)
    cold = encode_images(any_clip, inputs, batch_size=3, cache=True)
    warm = encode_images(any_clip, inputs, batch_size=3, cache=True)
    clear_memory()
    from_db = encode_images(any_clip, inputs, batch_size=3, cache=True)
    for got in (cold, warm, from_db):  # stored as computed: bit for bit, not to a tolerance
        assert np.array_equal(got, uncached) and got.sources == uncached.sources


def test_reduced_precision_is_close_cached_apart_and_checked(tiny_clip, tmp_path, cache_dir):
    paths = save_all(tmp_path / "imgs", pictures(4, seed=2))
    fp32 = encode_images(tiny_clip, paths)
    with forward_calls(tiny_clip.model.visual) as calls:
        bf16 = encode_images(tiny_clip, paths, precision="bf16")
    assert sum(calls) == 4  # not served fp32's vectors: a space (database) of its own
    assert len(list((cache_dir / "vectors").glob("*.sqlite3"))) == 2
    cosine = (np.asarray(bf16) * np.asarray(fp32)).sum(1)
    assert cosine.min() > 0.98 and not np.array_equal(bf16, fp32)
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1, atol=1e-5)
    with pytest.raises(ValueError, match="precision='int8'"):
        encode_images(tiny_clip, paths, precision="int8")


def test_file_rewritten_with_same_size_and_mtime_is_seen(tiny_clip, tmp_path):
    path = tmp_path / "a.bmp"  # BMP: same size for any content of the same shape
    pictures(1)[0].save(path)
    before = os.stat(path)
    encode_images(tiny_clip, [path])
    new = pictures(1, seed=7)[0]
    new.save(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # as a copy tool keeping dates would
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    np.testing.assert_allclose(encode_images(tiny_clip, [path]), reference(tiny_clip, [new]), atol=1e-5)


def test_file_edited_while_embedding_is_cached_under_what_was_read(tiny_clip, tmp_path):
    ims = pictures(2)
    a, b = save_all(tmp_path, ims)
    new_b = pictures(1, seed=7)[0]

    class EditsB:  # the model's own preprocess (same repr, so the same cache); its first call rewrites b.png
        fired = False

        def __repr__(self):
            return repr(tiny_clip.preprocess)

        def __call__(self, img):
            if not self.fired:
                self.fired = True
                new_b.save(b)  # another program edits b.png while a.png is being prepared
            return tiny_clip.preprocess(img)

    got = encode_images(dataclasses.replace(tiny_clip, preprocess=EditsB()), [a, b], workers=0)
    # a batch is read whole before any of it is decoded: b as read, before the edit
    np.testing.assert_allclose(got[1], reference(tiny_clip, [ims[1]])[0], atol=1e-5)
    # b.png now holds new_b: its vector must be new_b's, not the one filed under what was read
    np.testing.assert_allclose(encode_images(tiny_clip, [b]), reference(tiny_clip, [new_b]), atol=1e-5)
    ims[1].save(b)  # b.png back to its first content: its vector must be that content's
    np.testing.assert_allclose(encode_images(tiny_clip, [b]), reference(tiny_clip, [ims[1]]), atol=1e-5)


def test_reading_threads_leave_warning_filters_alone(tiny_clip, tmp_path):
    rng = np.random.default_rng(0)  # big enough that the threads decode at the same time
    ims = [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(32)]
    paths = save_all(tmp_path, ims)
    before = list(warnings.filters)
    encode_images(tiny_clip, paths, batch_size=4, workers=4, cache=False)
    assert warnings.filters == before


def test_unwritable_cache_warns_once_and_keeps_every_embedding(tiny_clip, tmp_path, monkeypatch):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")  # mkdir under a regular file fails, even for root
    monkeypatch.setenv("CLIPSPACE_CACHE_DIR", str(blocker))
    ims = pictures(3)
    paths = save_all(tmp_path / "imgs", ims)
    texts = ["a red circle", "a blue star", "a dog"]
    with pytest.warns(UserWarning) as seen:
        got = encode_images(tiny_clip, paths, batch_size=2)
        got_texts = encode_texts(tiny_clip, texts, cache=True)
    cache_warnings = [str(w.message) for w in seen if "could not write the embedding cache" in str(w.message)]
    assert len(cache_warnings) == 2  # one per call, not one per input
    np.testing.assert_allclose(got, reference(tiny_clip, ims), atol=1e-5)
    np.testing.assert_allclose(got_texts, encode_texts(tiny_clip, texts), atol=1e-6)


def test_a_rerun_whose_every_vector_is_cached_starts_no_thread(tiny_clip, tmp_path, cache_dir, monkeypatch):
    """Reading ahead pays only while the model has work to overlap: a batch with no misses leaves
    the next one to the calling thread, so an all-cached call hands nothing between threads (a
    cold call still reads ahead)."""
    import threading

    paths = save_all(tmp_path / "imgs", pictures(12, seed=7))
    started = []
    start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self.name), start(self))[1])
    first = encode_images(tiny_clip, paths, batch_size=4, workers=2)
    assert any(n.startswith("clipspace-load") for n in started)
    started.clear()
    with forward_calls(tiny_clip.model.visual) as calls:
        again = encode_images(tiny_clip, paths, batch_size=4, workers=2)
    assert calls == [] and started == [] and np.array_equal(again, first)
    pictures(1, seed=8)[0].save(paths[5])  # one new picture: its batch runs the model, the rest is cached
    with forward_calls(tiny_clip.model.visual) as calls:
        mixed = encode_images(tiny_clip, paths, batch_size=4, workers=2)
    assert sum(calls) == 1 and np.array_equal(np.delete(mixed, 5, 0), np.delete(first, 5, 0))
    np.testing.assert_allclose(mixed[5], encode_images(tiny_clip, [paths[5]], cache=False)[0], atol=1e-6)


def test_reading_threads_run_torch_on_one_thread_and_leave_the_callers_count(tiny_clip, tmp_path, monkeypatch):
    """Preprocessing on the reading threads runs torch single-threaded (each such thread would
    otherwise get an OpenMP team of its own, which slowed the model's forward by 5-14 %); the calling
    thread, and threads started later, keep torch's count."""
    import threading

    paths = save_all(tmp_path / "imgs", pictures(12, seed=9))
    caller, seen, preprocess = threading.current_thread(), [], tiny_clip.preprocess

    def spy(img):
        seen.append((threading.current_thread() is caller, torch.get_num_threads()))
        return preprocess(img)

    monkeypatch.setattr(tiny_clip, "preprocess", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # `make test` runs with OMP_NUM_THREADS=1: make there be something to keep
    try:
        got = encode_images(tiny_clip, paths, batch_size=4, workers=2, cache=False)
        after, later = torch.get_num_threads(), []
        t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        t.start()
        t.join()
        reads = list(seen)
        serial = encode_images(tiny_clip, paths, batch_size=4, workers=0, cache=False)  # the same pixels
    finally:
        torch.set_num_threads(before)
    assert after == 2 and later == [2]
    assert any(not on_caller for on_caller, _ in reads)
    assert all(n == (2 if on_caller else 1) for on_caller, n in reads), reads
    assert np.array_equal(got, serial)
