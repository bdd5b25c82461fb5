"""The image source panel, driven headless by setting its controls' values as the browser does.

Failures are checked against `encode_images(clip, folder, strict=False)` itself (the loader the
panel must share); embeddings against `clip.encode_images` of the same files; the consuming panels
against zero-shot, PCA and binding computed here from those embeddings."""
import datetime as dt
import io
import shutil

import numpy as np
import pytest
from PIL import Image
from ipywidgets.widgets.widget_upload import _deserialize_value

from clipspace import world
from clipspace.embedding import encode_images
from clipspace.image_sources import load_source
from clipspace.notebook.image_source_panel import OUT_OF_WORLD, ImageSourcePanel
from clipspace.photos import PHOTOS, photo
from clipspace.probes.zero_shot import WORLD_TEMPLATES, ZeroShotClassifier

N_PRESETS = 4


def png(seed: int, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


BAD = {"empty.jpg": b"", "cut.jpg": jpeg(5)[:300], "notes.jpg": b"this is text, not a jpeg\n"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Good files at the root and in class subfolders, and three bad ones (0-byte, truncated, text-as-jpg)."""
    root = tmp_path_factory.mktemp("pictures")
    (root / "circle").mkdir()
    (root / "square").mkdir()
    (root / "circle" / "a.png").write_bytes(png(1))
    (root / "square" / "b.png").write_bytes(png(2))
    (root / "loose.png").write_bytes(png(3, (20, 50)))
    (root / "readme.txt").write_text("not listed: not named like an image")
    for name, content in BAD.items():
        (root / name).write_bytes(content)
    return root


@pytest.fixture
def source(tiny_clip):
    return ImageSourcePanel(tiny_clip, presets=world.single_objects(N_PRESETS))


def upload_value(files: dict):
    """FileUpload.value as ipywidgets 8 builds it from the browser's message (its own deserializer)."""
    js = [{"name": name, "type": "image/png", "size": len(content), "content": memoryview(content),
           "last_modified": 1_700_000_000_000} for name, content in files.items()]
    return tuple(_deserialize_value(js, None))


def test_world_presets_are_the_scenes_rendered_for_the_clip(source, tiny_clip):
    scenes = source.presets
    assert source.kind == "world" and source.names == [s.caption(0) for s in scenes]
    want = tiny_clip.encode_images([s.render(tiny_clip.image_size) for s in scenes], progress=False)
    np.testing.assert_allclose(source.embeddings(), want, atol=1e-6)
    assert f"{N_PRESETS} images</b> from world presets" in source.status.value
    assert OUT_OF_WORLD not in source.status.value  # the offline default's own world


def test_a_folder_gives_the_good_images_and_the_same_failures_as_encode_images(source, tiny_clip, folder):
    source.controls.kind.value = "folder"
    source.controls.folder.value = str(folder)
    assert source._read.last_error is None
    with pytest.warns(UserWarning, match="3 of 6 images could not be read"):
        ref = encode_images(tiny_clip, folder, strict=False, cache=False)
    assert source.value.failures == ref.failures and len(ref.failures) == len(BAD)
    assert [s.name for s, _ in source.value.failures] == ["cut.jpg", "empty.jpg", "notes.jpg"]
    assert source.names == ["circle/a.png", "loose.png", "square/b.png"]
    assert source.value.labels == ["circle", None, "square"]
    assert [folder / n for n in source.names] == ref.sources
    np.testing.assert_allclose(source.embeddings(), ref, atol=1e-6)
    for path, reason in ref.failures:  # each bad file, with encode_images' own reason, in the status line
        assert f"{path}: {reason}" in source.status.value.replace("&#x27;", "'")
    assert "3 could not be read" in source.status.value
    assert OUT_OF_WORLD in source.status.value  # the offline default, out of its world


def test_a_limit_reads_the_first_files_and_says_how_many_there_are(source, folder):
    source.controls.kind.value, source.controls.folder.value = "folder", str(folder)
    source.controls.limit.value = 2
    assert source.names == ["circle/a.png"] and [s.name for s, _ in source.value.failures] == ["cut.jpg"]
    assert "the first 2 of 6 files" in source.status.value


def test_a_missing_folder_says_why_and_keeps_the_last_images(source, folder, tmp_path):
    source.controls.kind.value, source.controls.folder.value = "folder", str(folder)
    before = source.images
    source.controls.folder.value = str(tmp_path / "nope")
    assert "not a folder" in source.status.value and "not a folder" in str(source._read.last_error)
    assert source.images is before
    empty = tmp_path / "empty"
    empty.mkdir()
    source.controls.folder.value = str(empty)
    assert "no image files in this folder" in source.status.value


def test_an_upload_is_decoded_by_the_same_loader_with_the_same_messages(source, tiny_clip, folder, tmp_path):
    files = {"a.png": png(1), "b.png": png(7, (64, 16)), **BAD}
    source.controls.kind.value = "upload"
    assert "no files uploaded yet" in source.status.value
    source.controls.upload.value = upload_value(files)
    assert source._read.last_error is None and source.names == ["a.png", "b.png"]
    on_disk = tmp_path / "uploaded"
    on_disk.mkdir()
    for name, content in files.items():
        (on_disk / name).write_bytes(content)
    with pytest.warns(UserWarning):
        ref = encode_images(tiny_clip, on_disk, strict=False, cache=False)
    # the same reasons as the same bytes get on disk (named by the upload's file name)
    assert sorted(source.value.failures) == sorted((p.name, r) for p, r in ref.failures)
    np.testing.assert_allclose(source.embeddings(), ref, atol=1e-6)
    assert "3 could not be read" in source.status.value


def test_the_bundled_photos_show_their_licences(source, tiny_clip):
    source.controls.kind.value = "photos"
    source.controls.photos.value = ("chelsea", "coffee", "brick")
    assert source.names == ["chelsea", "coffee", "brick"]
    for name in ("chelsea", "coffee"):
        assert PHOTOS[name][1] in source.status.value
    assert "CC0, CC0Textures" in source.status.value  # the texture's licence
    np.testing.assert_array_equal(np.asarray(source.images[0]), np.asarray(photo("chelsea")))
    np.testing.assert_allclose(source.embeddings(), tiny_clip.encode_images([photo(n) for n in source.names]),
                               atol=1e-6)
    assert OUT_OF_WORLD in source.status.value


def test_the_out_of_world_note_is_only_for_the_offline_default(build_random_clip):
    other = build_random_clip("ViT-S-32-alt", seed=1)
    panel = ImageSourcePanel(other, presets=world.single_objects(2), kind="photos")
    assert panel.in_world and OUT_OF_WORLD not in panel.status.value
    assert panel.embeddings().shape == (len(panel.images), other.embed_dim)


def test_on_change_fires_after_every_read_that_gave_images(source, folder):
    seen = []
    source.on_change(lambda s: seen.append((s.kind, len(s.images))))
    source.controls.kind.value = "photos"
    source.controls.kind.value = "upload"  # nothing uploaded: the consumers are left as they were
    source.controls.kind.value = "folder"
    source.controls.folder.value = str(folder)
    source.controls.reload.click()
    assert seen == [("photos", 5), ("folder", 3), ("folder", 3)]


def test_load_source_without_widgets_matches_the_panel(folder, tiny_clip):
    got = load_source("folder", folder=folder)
    with pytest.warns(UserWarning):
        assert got.failures == encode_images(tiny_clip, folder, strict=False, cache=False).failures
    with pytest.raises(ValueError, match="kind="):
        load_source("camera")
    with pytest.raises(ValueError, match="not bundled"):
        load_source("photos", photos=["lena"])


# --- a consuming panel re-runs on a source change ----------------------------------------------
def test_zero_shot_classifies_the_sources_images_and_scores_the_folder_classes(tiny_clip, folder, tmp_path):
    from clipspace.notebook.zero_shot_panel import ZeroShotPanel

    scenes = world.single_objects(6)
    source = ImageSourcePanel(tiny_clip, presets=scenes)
    panel = ZeroShotPanel(tiny_clip, scenes, source=source)
    world_z = np.asarray(panel.confusion.data[0].z).copy()
    # a folder whose subfolders are world shapes: the zero-shot classifier of those names scores them
    root = tmp_path / "shapes"
    shutil.copytree(folder, root)
    source.controls.kind.value, source.controls.folder.value = "folder", str(root)
    assert panel._draw["classifier"].last_error is None and panel.user_images()
    names = list(world.SHAPES)
    zsc = ZeroShotClassifier.from_clip(tiny_clip, names, WORLD_TEMPLATES["shape"])
    with pytest.warns(UserWarning):
        z = tiny_clip.encode_images(root, strict=False)
    want = zsc.classify(z)
    np.testing.assert_allclose(panel.probe.result.probs, want.probs, atol=1e-5)
    truth = {0: "circle", 2: "square"}  # circle/a.png, square/b.png; loose.png has no class
    cm = np.zeros((len(names), len(names)), int)
    for i, t in truth.items():
        cm[names.index(t), want.predictions[i]] += 1
    np.testing.assert_array_equal(np.asarray(panel.confusion.data[0].z), cm)
    assert panel.confusion.layout.title.text.startswith("your images by subfolder")
    assert panel.controls.scene.max == 2
    panel.controls.scene.value = 1
    assert panel.bars.layout.title.text == f"loose.png → {want.predicted_names[1]}"
    source.controls.kind.value = "upload"  # nothing uploaded: the panel keeps the folder's images on screen
    panel.controls.scene.value = 2
    assert panel._draw["scene"].last_error is None
    assert panel.bars.layout.title.text == f"square/b.png → {want.predicted_names[2]}"
    source.controls.kind.value = "world"  # back to the probe scenes and their confusion matrix
    assert not panel.user_images() and panel.controls.scene.max == len(scenes) - 1
    np.testing.assert_array_equal(np.asarray(panel.confusion.data[0].z), world_z)


def test_pca_projection_and_caption_pairs_follow_the_source(tiny_clip):
    from sklearn.decomposition import PCA

    from clipspace.notebook.binding_panel import CaptionPairPanel
    from clipspace.notebook.pca_panel import PCAPanel, PCAProjectionPanel

    fitted = PCAPanel(tiny_clip, world.mixed_scenes(30), world.single_objects(6), examples=2)
    source = ImageSourcePanel(tiny_clip, presets=fitted.test_scenes)
    yours = PCAProjectionPanel(tiny_clip, fitted, source)
    pairs = CaptionPairPanel(tiny_clip, source, "a photo of a cat", "a photo of a dog")
    source.controls.kind.value = "photos"
    assert yours._draw.last_error is None and pairs._draw.last_error is None
    z = tiny_clip.encode_images([photo(n) for n in source.names])
    ref = PCA(svd_solver="full").fit(fitted.emb)
    xy = ref.transform(z)[:, :2]
    signs = np.sign(np.sum(ref.components_[:2] * fitted.pca.components_[:2], axis=1))  # PCA's sign is arbitrary
    np.testing.assert_allclose(np.c_[yours.fig.data[1].x, yours.fig.data[1].y], xy * signs, atol=1e-4)
    assert list(yours.fig.data[1].text) == source.names and yours.fig.layout.title.text.startswith("5 images (photos)")
    t = tiny_clip.encode_texts(["a photo of a cat", "a photo of a dog"])
    np.testing.assert_allclose(pairs.bars.data[0].y, z @ t[0], atol=1e-5)
    np.testing.assert_allclose(pairs.bars.data[1].y, z @ t[1], atol=1e-5)
    assert list(pairs.bars.data[0].x) == source.names


def test_typographic_and_unclip_read_the_sources_images(tiny_clip, tiny_config):
    from clipspace import unclip
    from clipspace.notebook.typographic_panel import TypographicPanel
    from clipspace.photos import square
    from clipspace.probes.typographic import write_text
    from clipspace.unclip.decoder import build_decoder
    from clipspace.notebook.unclip_explorer import OUT_OF_DECODER, UnclipImagesPanel

    source = ImageSourcePanel(tiny_clip, presets=world.single_objects(2))
    typo = TypographicPanel(tiny_clip, None, world.typographic_scenes(2), source=source)
    decoder = build_decoder(tiny_config(clip_model=tiny_clip.name, clip_embed_dim=tiny_clip.embed_dim), seed=0)
    inv = UnclipImagesPanel(tiny_clip, decoder, source, steps=2, n=2, iterations=2)
    assert OUT_OF_DECODER not in inv.note.value  # the world presets are the decoder's world
    source.controls.kind.value, source.controls.photos.value = "photos", ("chelsea", "coffee")
    c = typo.controls
    assert typo._draw["your_images"].last_error is None and inv._draw.last_error is None
    # the typographic read: the word on a white label, clean and attacked, over the classes plus the word
    names = list(world.SHAPES) + ([c.word.value] if c.word.value not in world.SHAPES else [])
    zsc = ZeroShotClassifier.from_clip(tiny_clip, names, WORLD_TEMPLATES["shape"])
    attacked = [write_text(photo(n), c.word.value, position=(c.x.value, c.y.value), size=c.size.value,
                           opacity=c.opacity.value, box="white") for n in source.names]
    want = zsc.classify(tiny_clip.encode_images(attacked))
    np.testing.assert_allclose(typo.user_result.attacked.probs, want.probs, atol=1e-5)
    c.word.value = "cat"
    assert typo.user_result.words == ["cat", "cat"] and "cat" in typo.user_result.attacked.classnames
    # the round trips: the library's invert and decode of the centre-cropped photos, both ways
    images = [square(photo(n), decoder.image_size) for n in source.names]
    for method, kw in (("ddim", {}), ("fixed_point", {"iterations": 2})):
        lat = unclip.invert(decoder, tiny_clip, images, steps=2, method=method, **kw)
        back = unclip.decode(decoder, lat.z, lat.x_T, steps=2)
        np.testing.assert_allclose(inv.psnrs[method], unclip.psnr(back, images), atol=1e-3)
    assert OUT_OF_DECODER in inv.note.value and inv.summary().startswith("2 images (photos)")


def test_a_failed_read_keeps_the_last_images_and_their_kind(source):
    source.controls.photos.value = ()  # no photo picked
    source.controls.kind.value = "photos"
    assert "photos is empty" in source.status.value and isinstance(source._read.last_error, ValueError)
    assert source.kind == "world" and len(source.images) == N_PRESETS  # what the consumers still show
    source.controls.photos.value = ("rocket",)
    assert source.kind == "photos" and source.names == ["rocket"]
