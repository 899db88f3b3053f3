"""Reading and writing photos without losing anything (facefix.photos), on real photos.

Test files are built in tmp_path from the real sample photos (insightface's
t1.jpg, scikit-image's astronaut); nothing is copied into the repository.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin, PngImagePlugin

from facefix.errors import FacefixError, PhotoError
from facefix.photos import (
    SUPPORTED_SUFFIXES,
    Photo,
    PhotoMeta,
    atomic_output,
    atomic_write_bytes,
    is_photo_path,
    read_photo,
    write_photo,
)

needs_tifffile = pytest.mark.skipif(
    importlib.util.find_spec("tifffile") is None, reason="16-bit colour TIFF needs tifffile"
)

MAKE, MODEL, DATETIME, ORIENTATION, EXIF_IFD, DATETIME_ORIGINAL = 0x010F, 0x0110, 0x0132, 0x0112, 0x8769, 0x9003
XMP = (
    b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
    b'tiff:Orientation="6"><dc:title><rdf:Alt><rdf:li xml:lang="x-default">Grandma, 1962</rdf:li>'
    b'</rdf:Alt></dc:title></rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)
# The transpose that *stores* an upright image under each EXIF orientation
# (the inverse of what a viewer applies).
STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.fixture(scope="module")
def portrait(portrait_photo) -> Image.Image:
    """The astronaut cropped to a non-square 256×192 so a wrong rotation shows."""
    with Image.open(portrait_photo) as im:
        return im.convert("RGB").resize((256, 256), Image.LANCZOS).crop((0, 32, 256, 224))


@pytest.fixture(scope="module")
def srgb_icc(portrait_photo) -> bytes:
    """The ICC profile embedded in astronaut.png (sRGB IEC61966-2.1)."""
    with Image.open(portrait_photo) as im:
        return im.info["icc_profile"]


def camera_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[MAKE], exif[MODEL], exif[DATETIME] = "Canon", "Canon EOS 5D", "2021:07:04 18:30:00"
    exif[ORIENTATION] = orientation
    exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = "2021:07:04 18:29:59"
    return exif


def stored(upright: Image.Image, orientation: int) -> Image.Image:
    op = STORE[orientation]
    return upright if op is None else upright.transpose(op)


def exif_of(path: Path) -> Image.Exif:
    with Image.open(path) as im:
        return im.getexif()


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# --- orientation and metadata -------------------------------------------------


def test_rotated_jpeg_with_icc_comes_out_upright_and_keeps_its_metadata(tmp_path, portrait, srgb_icc):
    src = tmp_path / "IMG_0001.jpg"
    stored(portrait, 6).save(src, quality=95, subsampling="4:4:4", exif=camera_exif(6).tobytes(),
                             icc_profile=srgb_icc)

    photo = read_photo(src)

    assert photo.pixels.shape == (192, 256, 3)  # upright, not 256×192
    assert diff(photo.pixels, np.asarray(portrait)) < 2.0
    assert photo.meta.icc == srgb_icc
    kept = Image.Exif()
    kept.load(photo.meta.exif[6:])
    assert kept[ORIENTATION] == 1 and kept[MAKE] == "Canon" and kept[DATETIME] == "2021:07:04 18:30:00"

    out = write_photo(photo, tmp_path / "out" / "IMG_0001.jpg")

    exif = exif_of(out)
    assert exif[ORIENTATION] == 1
    assert (exif[MAKE], exif[MODEL]) == ("Canon", "Canon EOS 5D")
    assert exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] == "2021:07:04 18:29:59"
    with Image.open(out) as im:
        assert im.info["icc_profile"] == srgb_icc
        # a viewer that honours EXIF shows it upright, not rotated twice
        assert np.array_equal(np.asarray(ImageOps.exif_transpose(im)), np.asarray(im))
        assert diff(np.asarray(im), np.asarray(portrait)) < 3.0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(tmp_path, portrait, orientation):
    src = tmp_path / f"o{orientation}.png"
    stored(portrait, orientation).save(src, exif=camera_exif(orientation).tobytes())

    photo = read_photo(src)

    assert np.array_equal(photo.pixels, np.asarray(portrait))
    assert exif_of(write_photo(photo, tmp_path / "out.png"))[ORIENTATION] == 1


def test_xmp_and_dpi_are_carried_to_every_format(tmp_path, portrait):
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    src = tmp_path / "scan.png"
    portrait.save(src, pnginfo=info, dpi=(600, 600))

    photo = read_photo(src)
    assert photo.meta.dpi == (600.0, 600.0)
    assert b"Grandma, 1962" in photo.meta.xmp
    assert b'tiff:Orientation="1"' in photo.meta.xmp  # pixels are upright: no viewer may rotate

    for name in ("out.jpg", "out.png", "out.tif", "out.webp"):
        again = read_photo(write_photo(photo, tmp_path / name))
        assert again.meta.xmp.strip(b"\x00") == photo.meta.xmp, name
        if not name.endswith(".webp"):  # WebP has no DPI field
            assert again.meta.dpi == (600.0, 600.0), name


def test_tiff_source_exif_keeps_camera_tags_but_not_its_pixel_layout(tmp_path, portrait):
    src = tmp_path / "scan.tif"
    stored(portrait, 8).save(src, exif=camera_exif(8).tobytes())

    photo = read_photo(src)
    out = write_photo(photo, tmp_path / "scan.jpg")

    assert np.array_equal(photo.pixels, np.asarray(portrait))
    exif = exif_of(out)
    assert exif.get(ORIENTATION, 1) == 1 and exif[MAKE] == "Canon"
    assert exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] == "2021:07:04 18:29:59"
    assert 273 not in exif and 258 not in exif  # the TIFF's StripOffsets/BitsPerSample stay behind


def test_webp_carries_exif_icc_and_is_lossless_from_a_lossless_source(tmp_path, portrait, srgb_icc):
    src = tmp_path / "a.png"
    portrait.save(src, exif=camera_exif(1).tobytes(), icc_profile=srgb_icc)

    out = write_photo(read_photo(src), tmp_path / "a.webp")

    with Image.open(out) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(portrait))
        assert im.info["icc_profile"] == srgb_icc
        assert im.getexif()[MAKE] == "Canon"


# --- pixel formats ----------------------------------------------------------------


@pytest.fixture(scope="module")
def rgb16(portrait) -> np.ndarray:
    """16-bit RGB whose low bytes matter (an 8-bit round trip would lose them)."""
    base = np.asarray(portrait).astype(np.uint16) * 257
    noise = np.random.default_rng(0).integers(0, 200, base.shape, dtype=np.uint16)
    return np.minimum(base + noise, 65535).astype(np.uint16)


def save_16bit(path: Path, pixels: np.ndarray) -> None:
    if pixels.shape[2] == 1:
        Image.fromarray(pixels[..., 0]).save(path)  # uint16 -> mode "I;16"
    else:  # Pillow cannot write 16-bit colour; OpenCV can (BGR order)
        assert cv2.imwrite(str(path), pixels[..., ::-1])


@pytest.mark.parametrize("suffix", [".png", pytest.param(".tif", marks=needs_tifffile)])
@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_photos_stay_16bit_through_restore_and_write(tmp_path, rgb16, suffix, channels):
    pixels = rgb16 if channels == 3 else rgb16[..., 1:2].copy()
    src = tmp_path / f"scan16{suffix}"
    save_16bit(src, pixels)

    photo = read_photo(src)
    assert photo.pixels.dtype == np.uint16 and photo.meta.bit_depth == 16
    assert np.array_equal(photo.pixels, pixels)

    restored = photo.with_rgb(photo.rgb_float())  # what an identity restorer gives back
    assert np.array_equal(restored.pixels, pixels)

    out = write_photo(restored, tmp_path / f"out{suffix}")
    again = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    again = again[..., None] if again.ndim == 2 else again[..., ::-1]
    assert again.dtype == np.uint16
    assert np.array_equal(again, pixels)
    assert np.array_equal(read_photo(out).pixels, pixels)


def png_with_exif(png: bytes, exif: bytes) -> bytes:
    """Insert an eXIf chunk after IHDR (OpenCV writes PNG without EXIF)."""
    body = exif[6:] if exif.startswith(b"Exif") else exif
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    return png[:33] + chunk + png[33:]


@pytest.mark.parametrize("suffix", [".png", pytest.param(".tif", marks=needs_tifffile)])
def test_rotated_16bit_colour_photo_comes_out_upright(tmp_path, rgb16, suffix):
    upright = rgb16
    on_disk = np.rot90(upright, 1)  # what a camera rotated 90° clockwise stores (orientation 6)
    src = tmp_path / f"rot16{suffix}"
    if suffix == ".png":
        ok, png = cv2.imencode(".png", on_disk[..., ::-1])
        src.write_bytes(png_with_exif(png.tobytes(), camera_exif(6).tobytes()))
    else:
        import tifffile

        tifffile.imwrite(src, on_disk, photometric="rgb", extratags=[(274, "H", 1, 6, True)])

    photo = read_photo(src)

    assert photo.pixels.dtype == np.uint16
    assert np.array_equal(photo.pixels, upright)


def test_16bit_gray_with_alpha_round_trips_through_png(tmp_path, rgb16):
    la = np.dstack([rgb16[..., 0], rgb16[..., 2]])
    photo = Photo(la, PhotoMeta(format="PNG", mode="LA", bit_depth=16, dpi=(300.0, 300.0)))

    again = read_photo(write_photo(photo, tmp_path / "la16.png"))

    assert again.pixels.dtype == np.uint16 and np.array_equal(again.pixels, la)
    assert again.meta.dpi == (300.0, 300.0)


def test_phone_jpeg_with_extra_pictures_is_a_plain_jpeg(tmp_path, portrait, caplog):
    src = tmp_path / "IMG_0002.jpg"  # MPO: main picture + a preview, as many phones write
    portrait.save(src, "MPO", save_all=True, append_images=[portrait.resize((64, 48))], quality=90)

    with caplog.at_level(logging.WARNING, logger="facefix"):
        photo = read_photo(src)

    assert photo.meta.format == "JPEG" and photo.meta.jpeg_quality == 90
    assert photo.pixels.shape == (192, 256, 3)
    assert caplog.text == ""


def test_16bit_photo_written_as_jpeg_is_rounded_to_8bit(tmp_path, rgb16):
    src = tmp_path / "scan16.png"
    save_16bit(src, rgb16)

    out = read_photo(write_photo(read_photo(src), tmp_path / "scan.jpg"))

    assert out.pixels.dtype == np.uint8
    assert diff(out.pixels, np.rint(rgb16 / 257.0)) < 2.0


def test_rgba_png_keeps_its_alpha_and_refuses_jpeg(tmp_path, portrait):
    alpha = np.tile(np.linspace(0, 255, 256).astype(np.uint8), (192, 1))
    rgba = np.dstack([np.asarray(portrait), alpha])
    src = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(src)

    photo = read_photo(src)
    assert photo.pixels.shape == (192, 256, 4) and np.array_equal(photo.pixels, rgba)

    with Image.open(write_photo(photo.with_rgb(photo.rgb_float()), tmp_path / "out.png")) as im:
        assert im.mode == "RGBA" and np.array_equal(np.asarray(im), rgba)

    upscaled = photo.with_rgb(cv2.resize(photo.rgb_float(), (512, 384), interpolation=cv2.INTER_CUBIC))
    assert upscaled.pixels.shape == (384, 512, 4)
    assert abs(int(upscaled.pixels[10, 500, 3]) - 250) <= 2  # the alpha ramp was resized with it

    with pytest.raises(PhotoError, match=r"out\.jpg.*\.png"):
        write_photo(photo, tmp_path / "out.jpg")
    assert not (tmp_path / "out.jpg").exists()


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_grayscale_photo_stays_one_channel(tmp_path, portrait, suffix):
    gray = portrait.convert("L")
    src = tmp_path / f"bw{suffix}"
    gray.save(src)

    photo = read_photo(src)
    assert photo.pixels.shape == (192, 256, 1) and photo.is_grayscale
    assert photo.rgb_float().shape == (192, 256, 3) and photo.rgb8().shape == (192, 256, 3)

    restored = photo.with_rgb(photo.rgb_float())
    assert np.array_equal(restored.pixels, photo.pixels)
    with Image.open(write_photo(restored, tmp_path / f"out{suffix}")) as im:
        assert im.mode == "L"


def test_rgb_scan_with_equal_channels_counts_as_grayscale(tmp_path, portrait):
    src = tmp_path / "scan.png"
    portrait.convert("L").convert("RGB").save(src)
    colour = tmp_path / "colour.png"
    portrait.save(colour)

    assert read_photo(src).pixels.shape[2] == 3 and read_photo(src).is_grayscale
    assert not read_photo(colour).is_grayscale


def test_cmyk_jpeg_reads_as_the_right_rgb(tmp_path, portrait, srgb_icc):
    src = tmp_path / "print.jpg"
    portrait.convert("CMYK").save(src, quality=95)
    mislabelled = tmp_path / "mislabelled.jpg"  # an RGB profile on CMYK data: ignored, with a warning
    portrait.convert("CMYK").save(mislabelled, quality=95, icc_profile=srgb_icc)

    for path in (src, mislabelled):
        photo = read_photo(path)
        assert photo.meta.mode == "CMYK" and photo.pixels.shape == (192, 256, 3)
        assert diff(photo.pixels, np.asarray(portrait)) < 3.0
        assert photo.meta.icc is None
        with Image.open(write_photo(photo, tmp_path / f"rgb-{path.name}")) as im:
            assert im.mode == "RGB"


# A tiny CMYK printer profile (ICC v2, one lut16 A2B0 with a 2-point grid):
# each ink multiplies the paper white by its colour, so pure cyan is a
# muted (0, 160, 220), not the (0, 255, 255) of the plain formula.
INKS = [(0, 160, 220), (230, 0, 140), (255, 240, 0), (30, 30, 30)]


def ink_rgb(on: tuple[int, ...]) -> np.ndarray:
    rgb = np.ones(3)
    for flag, ink in zip(on, INKS):
        rgb = rgb * (np.array(ink) / 255 if flag else 1)
    return np.rint(rgb * 255).astype(np.uint8)


def cmyk_printer_profile() -> bytes:
    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    corners = list(itertools.product((0, 1), repeat=4))  # first channel slowest, as ICC wants
    rgb = Image.fromarray(np.array([[ink_rgb(c) for c in corners]], np.uint8), "RGB")
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                     "RGB", "LAB")
    lab = np.asarray(ImageCms.applyTransform(rgb, to_lab))[0]
    lightness = lab[:, 0].astype(np.int64) * 0xFF00 // 255
    ab = (lab[:, 1:].view(np.int8).astype(np.int64) + 128) * 256  # Pillow keeps a*, b* as int8
    ramp = np.array([0, 65535], ">u2").tobytes()
    a2b0 = (b"mft2" + bytes(4) + bytes([4, 3, 2, 0]) + b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
            + struct.pack(">HH", 2, 2) + ramp * 4 + np.c_[lightness, ab].astype(">u2").tobytes() + ramp * 3)
    d50 = s15(0.9642) + s15(1.0) + s15(0.8249)
    text = b"facefix test CMYK\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 2 + 1 + 67)
    tags = [(b"desc", desc), (b"wtpt", b"XYZ " + bytes(4) + d50), (b"A2B0", a2b0)]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = (struct.pack(">I", offset + len(data)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"prtrCMYKLab "
              + bytes(12) + b"acsp" + bytes(28) + d50 + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + data


def test_cmyk_jpeg_with_a_profile_is_converted_through_it(tmp_path):
    corners = [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (0, 1, 1, 0)]
    cmyk = np.repeat(np.repeat(np.array([[np.array(c) * 255 for c in corners]], np.uint8), 16, 0), 16, 1)
    src = tmp_path / "press.jpg"
    Image.fromarray(cmyk, "CMYK").save(src, quality=100, subsampling="4:4:4",
                                       icc_profile=cmyk_printer_profile())

    photo = read_photo(src)

    got = photo.pixels[8, 8::16].astype(int)
    # within the 8-bit Lab precision of the test profile (steep near zero red)
    assert np.abs(got - [ink_rgb(c) for c in corners]).max() <= 12
    assert np.abs(got[1] - [0, 255, 255]).max() > 50  # not the plain formula's cyan
    assert photo.meta.icc[16:20] == b"RGB "  # the pixels are now sRGB and say so


def test_palette_png_becomes_rgb_or_rgba(tmp_path, portrait):
    pal = portrait.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    src = tmp_path / "pal.png"
    pal.save(src)
    clear = tmp_path / "pal-transparent.png"
    pal.save(clear, transparency=0)

    photo = read_photo(src)
    assert photo.meta.mode == "P"
    assert np.array_equal(photo.pixels, np.asarray(pal.convert("RGB")))
    see_through = read_photo(clear).pixels
    assert see_through.shape[2] == 4
    assert np.array_equal(see_through[..., 3] == 0, np.asarray(pal) == 0)


def test_animated_gif_gives_its_first_frame_with_a_warning(tmp_path, caplog):
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((200, 0, 0), (0, 200, 0), (0, 0, 200))]
    src = tmp_path / "anim.gif"
    frames[0].save(src, save_all=True, append_images=frames[1:], duration=100)

    with caplog.at_level(logging.WARNING, logger="facefix"):
        photo = read_photo(src)

    assert photo.meta.frames == 3
    assert tuple(photo.pixels[15, 20]) == (200, 0, 0)
    assert "anim.gif" in caplog.text and "first" in caplog.text


# --- JPEG quality -------------------------------------------------------------------


@pytest.mark.parametrize("quality", [75, 95])
@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_jpeg_quality_and_subsampling_are_estimated_and_kept(tmp_path, group_photo, quality, subsampling):
    with Image.open(group_photo) as im:
        im.save(tmp_path / "src.jpg", quality=quality, subsampling=subsampling)

    photo = read_photo(tmp_path / "src.jpg")
    assert photo.meta.jpeg_quality == quality
    assert photo.meta.jpeg_subsampling == subsampling

    with Image.open(write_photo(photo, tmp_path / "out.jpg")) as out:
        assert JpegImagePlugin.get_sampling(out) == {"4:4:4": 0, "4:2:0": 2}[subsampling]
        assert out.quantization == Image.open(tmp_path / "src.jpg").quantization


def test_camera_jpeg_gets_a_plausible_quality(group_photo):
    photo = read_photo(group_photo)
    assert 50 <= photo.meta.jpeg_quality <= 100
    assert photo.meta.jpeg_subsampling in {"4:4:4", "4:2:2", "4:2:0"}
    assert photo.rgb8().shape == (886, 1280, 3)


def test_png_source_written_as_jpeg_uses_quality_95(tmp_path, portrait):
    portrait.save(tmp_path / "a.png")
    out = write_photo(read_photo(tmp_path / "a.png"), tmp_path / "a.jpg")
    assert read_photo(out).meta.jpeg_quality == 95


# --- safe writing ---------------------------------------------------------------------


def test_failed_rename_leaves_no_file_and_keeps_the_old_one(tmp_path, portrait, monkeypatch):
    portrait.save(tmp_path / "a.png")
    photo = read_photo(tmp_path / "a.png")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "a.jpg").write_bytes(b"previous result")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(PhotoError, match=r"a\.jpg.*No space left"):
        write_photo(photo, out_dir / "a.jpg")

    assert [p.name for p in out_dir.iterdir()] == ["a.jpg"]
    assert (out_dir / "a.jpg").read_bytes() == b"previous result"


def test_interrupted_encoder_leaves_nothing_behind(tmp_path, portrait, monkeypatch):
    portrait.save(tmp_path / "a.png")
    photo = read_photo(tmp_path / "a.png")
    out_dir = tmp_path / "out"
    real_save = Image.Image.save

    def save_then_die(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)  # a partial/complete temp file exists
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_photo(photo, out_dir / "a.png")

    assert list(out_dir.iterdir()) == []


def test_atomic_helpers_write_whole_files_with_normal_permissions(tmp_path):
    target = atomic_write_bytes(tmp_path / "report" / "run.json", b'{"ok": true}')
    assert target.read_bytes() == b'{"ok": true}'
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask

    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "report" / "run.json") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b'{"ok": true}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["run.json"]


def test_an_input_is_never_overwritten(tmp_path, portrait):
    src = tmp_path / "photos" / "a.jpg"
    src.parent.mkdir()
    portrait.save(src)
    before = src.read_bytes()
    photo = read_photo(src)
    (tmp_path / "link.jpg").symlink_to(src)
    os.link(src, tmp_path / "hard.jpg")

    for target in (src, tmp_path / "photos" / ".." / "photos" / "a.jpg", tmp_path / "link.jpg",
                   tmp_path / "hard.jpg"):
        with pytest.raises(PhotoError, match="never overwrites"):
            write_photo(photo, target)
        with pytest.raises(PhotoError):  # whatever the format asked for
            write_photo(photo, target, format="PNG")
    assert src.read_bytes() == before


# --- bad input ------------------------------------------------------------------------------


def test_truncated_jpeg_is_reported_not_padded(tmp_path, group_photo):
    data = Path(group_photo).read_bytes()
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(data[: len(data) // 2])

    with pytest.raises(PhotoError, match=r"photo\.jpg: the file is truncated.*re-copy"):
        read_photo(bad)


@pytest.mark.parametrize("keep", [4, 20, 200])
def test_jpeg_cut_inside_its_header_is_reported(tmp_path, group_photo, keep):
    bad = tmp_path / "header.jpg"
    bad.write_bytes(Path(group_photo).read_bytes()[:keep])

    with pytest.raises(PhotoError, match=r"header\.jpg: .*re-copy|header\.jpg: not a photo"):
        read_photo(bad)


def test_truncated_png_is_reported(tmp_path, portrait_photo):
    data = Path(portrait_photo).read_bytes()
    bad = tmp_path / "photo.png"
    bad.write_bytes(data[: len(data) // 2])

    with pytest.raises(PhotoError, match=r"photo\.png: .*re-copy"):
        read_photo(bad)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("meeting notes, not a photo\n"), "not a photo"),
        (lambda p: p.mkdir(), "directory"),
        (lambda p: None, "no such file"),
    ],
    ids=["zero-bytes", "text-named-jpg", "directory", "missing"],
)
def test_bad_files_raise_a_photo_error_naming_the_file(tmp_path, make, expected):
    path = tmp_path / "holiday.jpg"
    make(path)

    with pytest.raises(PhotoError, match=expected) as info:
        read_photo(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, FacefixError)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_says_permission(tmp_path, portrait):
    path = tmp_path / "locked.jpg"
    portrait.save(path)
    path.chmod(0)
    try:
        with pytest.raises(PhotoError, match=r"locked\.jpg.*permission"):
            read_photo(path)
    finally:
        path.chmod(0o644)


def test_decompression_bomb_is_refused_before_decoding(tmp_path, portrait, monkeypatch):
    path = tmp_path / "huge.png"
    portrait.save(path)  # 256×192 = 49,152 pixels

    with pytest.raises(PhotoError, match=r"huge\.png: 256×192.*FACEFIX_MAX_PIXELS"):
        read_photo(path, max_pixels=10_000)
    monkeypatch.setenv("FACEFIX_MAX_PIXELS", "10000")
    with pytest.raises(PhotoError, match="huge.png"):
        read_photo(path)
    monkeypatch.setenv("FACEFIX_MAX_PIXELS", "100000")
    assert read_photo(path).pixels.shape == (192, 256, 3)


def test_facefix_limit_governs_not_pillows_global(tmp_path, portrait, monkeypatch):
    # Pillow alone would refuse this image (over 2 × its MAX_IMAGE_PIXELS);
    # facefix's own limit decides, and Pillow's globals are left as they were.
    path = tmp_path / "panorama.png"
    portrait.save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)

    assert read_photo(path).pixels.shape == (192, 256, 3)
    assert Image.MAX_IMAGE_PIXELS == 1_000


# --- small helpers --------------------------------------------------------------------------


def test_photo_suffixes_match_in_any_case():
    assert is_photo_path("IMG_0001.JPG") and is_photo_path(Path("a/b.TiFf")) and is_photo_path("x.webp")
    assert not is_photo_path("notes.txt") and not is_photo_path(".a.jpg.123.part")
    assert is_photo_path("IMG_4521.HEIC") and is_photo_path("a.heif") and is_photo_path("b.avif")
    assert SUPPORTED_SUFFIXES == {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp",
                                  ".heic", ".heif", ".hif", ".avif"}


def test_with_rgb_rounds_rather_than_truncates_and_clips():
    photo = Photo(np.zeros((1, 4, 3), np.uint8), PhotoMeta(format="PNG", mode="RGB"))
    values = np.array([0.6, 1.4, 300.0, -5.0], dtype=np.float32) / 255
    out = photo.with_rgb(np.repeat(values[None, :, None], 3, axis=2))
    assert out.pixels[0, :, 0].tolist() == [1, 1, 255, 0]
    with pytest.raises(ValueError, match="H×W×3"):
        photo.with_rgb(np.zeros((2, 2), np.float32))
