"""load_image: each odd image kind comes out as the RGB a viewer shows; each bad file names itself."""
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from clipspace import images
from clipspace.errors import BadImageError
from clipspace.images import list_images, load_image

RED, BLUE_BG = (255, 0, 0), (0, 128, 255)


def px(im, xy):
    return np.asarray(im)[xy[1], xy[0]].astype(int)


def marked_jpeg(path, orientation, w=48, h=24):
    """White w x h image, stored with a red 12x12 block in the stored top-left corner."""
    a = np.full((h, w, 3), 255, np.uint8)
    a[:12, :12] = RED
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(path, quality=95, subsampling=0, exif=exif)
    return a


@pytest.mark.parametrize("orientation,k", [(6, -1), (8, 1)])  # 6: shown turned 90 deg clockwise; 8: anticlockwise
def test_exif_rotation_applied_first(tmp_path, orientation, k):
    stored = marked_jpeg(tmp_path / "r.jpg", orientation)
    im = load_image(tmp_path / "r.jpg")
    shown = np.rot90(stored, k=k)  # the independent expectation
    assert im.size == (24, 48) == (shown.shape[1], shown.shape[0])
    got = np.asarray(im).astype(int)
    assert np.abs(got - shown).mean() < 3  # JPEG noise only; a wrong turn would move the whole block
    ys, xs = np.nonzero(shown[:, :, 1] < 128)  # where the marker must land: top-right (6) or bottom-left (8)
    assert np.abs(got[int(ys.mean()), int(xs.mean())] - RED).max() < 40 and (got[0, 0] > 200).all()


def test_cmyk_jpeg_converted(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    im = load_image(tmp_path / "c.jpg")
    assert im.mode == "RGB" and np.abs(px(im, (8, 8)) - RED).max() <= 6


def test_16bit_png_rescaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 30000]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as raw:
        assert raw.mode == "I;16"
        assert np.asarray(raw.convert("L")).tolist() == [[0, 255, 255, 255]]  # PIL's own convert clips
    got = np.asarray(load_image(tmp_path / "g16.png"))
    assert got.shape == (1, 4, 3)
    assert got[0, :, 0].tolist() == [0, 100, 255, round(30000 / 257)] and (got == got[:, :, :1]).all()


def write_png(path, w, h, depth, colour, raw):
    """A PNG written by hand: header, one IDAT of `raw` (filtered scanlines), end."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def write_png48(path, a):
    """A 16-bit-per-channel RGB PNG written by hand (PIL cannot write one)."""
    h, w, _ = a.shape
    write_png(path, w, h, 16, 2, b"".join(b"\x00" + a[r].astype(">u2").tobytes() for r in range(h)))


def write_bomb(path, side=100_000):
    """A decompression bomb: a few hundred bytes whose header claims side x side grey pixels."""
    write_png(path, side, side, 8, 0, b"\x00" * 1000)


def test_48bit_png_and_uint16_array_rescaled(tmp_path):
    a = np.array([[[0, 25700, 65535], [30000, 257, 40000]]], np.uint16)
    write_png48(tmp_path / "c48.png", a)
    expected = np.round(a / 257.0)
    assert np.abs(np.asarray(load_image(tmp_path / "c48.png")) - expected).max() <= 1
    assert (np.asarray(load_image(a)) == expected).all()


def test_palette_transparency_composited_on_background(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0] + list(RED) + [0] * 762)
    im.putpixel((2, 2), 1)
    im.save(tmp_path / "p.png", transparency=0)
    got = load_image(tmp_path / "p.png", background=BLUE_BG)
    assert tuple(px(got, (0, 0))) == BLUE_BG and tuple(px(got, (2, 2))) == RED


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited(tmp_path, mode):
    colour = RED if mode == "RGBA" else (200, 200, 200)
    a = np.zeros((1, 3, 4), np.uint8)
    a[..., :3] = colour
    a[0, :, 3] = [0, 255, 128]
    im = Image.fromarray(a).convert(mode)
    im.save(tmp_path / "a.png")
    got = np.asarray(load_image(tmp_path / "a.png", background=BLUE_BG)).astype(int)
    assert tuple(got[0, 0]) == BLUE_BG and tuple(got[0, 1]) == colour
    blend = 128 / 255 * np.array(colour) + (1 - 128 / 255) * np.array(BLUE_BG)
    assert np.abs(got[0, 2] - blend).max() <= 1


def test_numpy_and_pil_inputs():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert (np.asarray(load_image(rgb)) == rgb).all()
    assert (np.asarray(load_image(rgb / 255.0)) == rgb).all()  # float in [0, 1]
    gray = load_image(rgb[:, :, 0])
    assert (np.asarray(gray) == rgb[:, :, :1]).all()
    pil = Image.fromarray(rgb)
    assert load_image(pil) is not pil and (np.asarray(load_image(pil)) == rgb).all()
    with pytest.raises(BadImageError, match=r"\[0, 1\]"):
        load_image(rgb * 2.0)
    with pytest.raises(BadImageError, match="HxWxC"):
        load_image(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(BadImageError, match=r"got shape \(5, 8, 9\); .* a list of HxW arrays or an \(N, H, W, C\)"):
        load_image(np.zeros((5, 8, 9), np.uint8))  # a stack of grayscale images, or one 5 x 8 image of 9 channels?
    with pytest.raises(BadImageError, match="unsupported input type"):
        load_image(42)


def valid_bytes(fmt):
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("name,content,reason", [
    ("cut.jpg", valid_bytes("JPEG")[:600], "truncated"),
    ("cut.png", valid_bytes("PNG")[:3000], "truncated"),
    ("empty.png", b"", "empty file"),
    ("text.png", b"this is not an image\n", "not an image"),
])
def test_bad_files_name_file_and_reason(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as e:
        load_image(tmp_path / name)
    assert str(tmp_path / name) in str(e.value) and e.value.source == tmp_path / name


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(BadImageError, match="file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(BadImageError, match="folder"):
        load_image(tmp_path)


def test_pixel_limit(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(BadImageError, match=r"10,000 pixels is over the limit of 5,000.*max_pixels") as e:
        load_image(tmp_path / "big.png", max_pixels=5000)
    assert "big.png" in str(e.value)
    assert load_image(tmp_path / "big.png", max_pixels=10_000).size == (100, 100)
    monkeypatch.setattr(images, "MAX_PIXELS", 999)
    with pytest.raises(BadImageError, match="limit of 999"):
        load_image(tmp_path / "big.png")


def test_list_images_sorted_recursive(tmp_path):
    for rel in ["b.png", "a/z.JPG", "a/c.png", "notes.txt", ".hidden/x.png", "._d.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a/c.png", "a/z.JPG", "b.png"]


def test_max_pixels_is_per_call_and_pil_keeps_its_own_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's process-wide limit, put back after the test
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")  # 10,000 pixels: more than 2x PIL's limit
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert load_image(tmp_path / "big.png", max_pixels=20_000).size == (100, 100)
    assert [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)] == []  # a size we accept
    assert Image.MAX_IMAGE_PIXELS == 1000  # not raised for good
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "big.png")  # PIL elsewhere in the process still refuses it


def test_bomb_refused_elsewhere_after_a_raised_limit(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    write_bomb(tmp_path / "bomb.png")  # 10^10 pixels claimed
    Image.new("RGB", (8, 8)).save(tmp_path / "small.png")
    try:
        assert load_image(tmp_path / "small.png", max_pixels=10 ** 11).size == (8, 8)
        assert Image.MAX_IMAGE_PIXELS == before
        with pytest.raises(Image.DecompressionBombError):
            Image.open(tmp_path / "bomb.png")
    finally:
        Image.MAX_IMAGE_PIXELS = before  # whatever happened, later tests keep PIL's protection


def test_bomb_reported_as_over_the_pixel_limit(tmp_path):
    write_bomb(tmp_path / "bomb.png")
    with pytest.raises(BadImageError, match=r"over the limit of 89,478,485 pixels .*pass max_pixels=N or set "
                                            r"clipspace\.images\.MAX_PIXELS") as e:
        load_image(tmp_path / "bomb.png")  # PIL itself refuses it (over 2x its limit) before our check
    assert "bomb.png" in str(e.value) and "corrupt" not in str(e.value)


def test_symlinks_and_special_files_say_what_they_are(tmp_path):
    os.symlink("gone.png", tmp_path / "dangling.png")
    os.symlink("loop.png", tmp_path / "loop.png")
    os.mkfifo(tmp_path / "pipe.png")  # opening it for reading would wait for a writer: must not hang
    Image.new("RGB", (4, 4)).save(tmp_path / "real.png")
    os.symlink("real.png", tmp_path / "link.png")
    with pytest.raises(BadImageError, match=r"dangling\.png: dangling symlink \(points to gone\.png\)$"):
        load_image(tmp_path / "dangling.png")
    with pytest.raises(BadImageError, match=r"loop\.png: symlink loop$"):
        load_image(tmp_path / "loop.png")
    with pytest.raises(BadImageError, match=r"pipe\.png: not a regular file \(a FIFO\)$"):
        load_image(tmp_path / "pipe.png")
    with pytest.raises(BadImageError, match=r"^'': empty path"):
        load_image("")  # Path("") is ".", the current folder: never read it
    assert load_image(tmp_path / "link.png").size == (4, 4)  # a symlink to an image is that image


def test_path_and_bytes_decode_alike(tmp_path):
    from clipspace.images import decode_image, read_image_file

    marked_jpeg(tmp_path / "r.jpg", 6)
    data = read_image_file(tmp_path / "r.jpg")
    assert data == (tmp_path / "r.jpg").read_bytes()
    assert np.array_equal(np.asarray(decode_image(data, "r.jpg")), np.asarray(load_image(tmp_path / "r.jpg")))
    with pytest.raises(BadImageError, match=r"^photo\.png: truncated") as e:
        decode_image(valid_bytes("PNG")[:3000], "photo.png")  # errors name the file, not a byte buffer
    assert e.value.source == "photo.png"


@pytest.mark.skipif(not os.path.exists("/proc/self/cmdline"), reason="needs Linux's /proc")
def test_file_whose_size_is_not_its_length_is_read_to_the_end():
    from clipspace.images import read_image_file

    # /proc files say 0 bytes and hold more: the read past fstat's size must not stop at it
    with open("/proc/self/cmdline", "rb") as f:
        assert read_image_file("/proc/self/cmdline") == f.read() != b""


def test_large_file_read_whole(tmp_path):
    from clipspace.images import read_image_file

    data = os.urandom(5 * 2 ** 20 + 3)
    (tmp_path / "big.bin").write_bytes(data)
    assert read_image_file(tmp_path / "big.bin") == data
    assert read_image_file(str(tmp_path / "big.bin")) == read_image_file(os.fsencode(tmp_path / "big.bin")) == data


def test_list_images_lists_unreadable_entries_and_reports_unlistable_folders(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "b.png")
    os.symlink("gone.png", tmp_path / "a_dangling.png")
    os.symlink("c_loop.png", tmp_path / "c_loop.png")
    os.symlink(".", tmp_path / "d_dir.png")  # a link to a folder: not followed, not listed
    (tmp_path / "sub").mkdir()
    os.symlink("../b.png", tmp_path / "sub" / "e.png")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == \
        ["a_dangling.png", "b.png", "c_loop.png", "sub/e.png"]
    with pytest.raises(BadImageError, match="cannot list this folder"):
        list_images(tmp_path / "missing")
