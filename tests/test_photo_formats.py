"""The formats of real photo libraries: HEIC/AVIF, 16-bit planar and RGBa TIFF,
16-bit APNG, RGB565 and 32-bit BMP, tRNS transparency, and what is refused.

Every test file is built here, in tmp_path, from the astronaut sample photo or
from numbers; nothing third-party is copied into the repository.
"""

from __future__ import annotations

import builtins
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, features

from facefix.errors import PhotoError
from facefix.photos import is_photo_path, read_photo, write_photo

pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC needs pillow-heif (a dependency)")
tifffile = pytest.importorskip("tifffile")
needs_avif = pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF")

MAKE, MODEL, ORIENTATION, EXIF_IFD, DATETIME_ORIGINAL = 0x010F, 0x0110, 0x0112, 0x8769, 0x9003
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
       b'22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">'
       b'<dc:title>Beach, 2019</dc:title></rdf:Description></rdf:RDF></x:xmpmeta>')


@pytest.fixture(scope="module")
def portrait(portrait_photo) -> Image.Image:
    """The astronaut at 128×96 (non-square, so a wrong rotation shows)."""
    with Image.open(portrait_photo) as im:
        return im.convert("RGB").resize((128, 128), Image.LANCZOS).crop((0, 16, 128, 112))


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def phone_exif(orientation: int = 1) -> bytes:
    exif = Image.Exif()
    exif[MAKE], exif[MODEL], exif[ORIENTATION] = "Apple", "iPhone 12", orientation
    exif.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = "2023:08:14 09:12:44"
    return exif.tobytes()


def exif_tags(raw: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(raw[6:] if raw.startswith(b"Exif") else raw)
    return exif


def diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# --- HEIC / HEIF / AVIF -------------------------------------------------------------


def save_heic(path: Path, image: Image.Image, **kwargs) -> None:
    pillow_heif.from_pillow(image).save(path, quality=95, **kwargs)


def test_heic_reads_and_writes_back_with_exif_xmp_and_icc(tmp_path, portrait, srgb_icc):
    src = tmp_path / "IMG_4521.HEIC"
    image = portrait.copy()
    image.info["icc_profile"] = srgb_icc
    save_heic(src, image, exif=phone_exif(), xmp=XMP)
    assert is_photo_path(src)

    photo = read_photo(src)

    assert photo.meta.format == "HEIF" and photo.pixels.shape == (96, 128, 3)
    assert diff(photo.pixels, np.asarray(portrait)) < 3.0
    assert exif_tags(photo.meta.exif)[MODEL] == "iPhone 12"
    assert photo.meta.icc == srgb_icc and photo.meta.xmp == XMP

    out = write_photo(photo, tmp_path / "out" / "IMG_4521.HEIC")  # what --ext same writes

    heif = pillow_heif.open_heif(out)
    assert heif.size == (128, 96)
    assert out.read_bytes()[4:12] == b"ftypheic"
    kept = exif_tags(heif.info["exif"])
    assert (kept[MAKE], kept[MODEL]) == ("Apple", "iPhone 12")
    assert kept.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] == "2023:08:14 09:12:44"
    assert heif.info["xmp"] == XMP and heif.info["icc_profile"] == srgb_icc
    assert diff(np.asarray(heif), np.asarray(portrait)) < 4.0
    assert src.read_bytes()[4:12] == b"ftypheic"  # the original is untouched


def test_heic_rotation_is_applied_once(tmp_path, portrait):
    # A phone stores the sensor's pixels and a rotation; libheif turns them
    # upright while decoding, and the EXIF orientation must not turn them again.
    src = tmp_path / "IMG_0007.heic"
    save_heic(src, portrait.transpose(Image.Transpose.ROTATE_90), exif=phone_exif(6))

    photo = read_photo(src)

    assert photo.pixels.shape == (96, 128, 3)
    assert diff(photo.pixels, np.asarray(portrait)) < 3.0
    assert exif_tags(photo.meta.exif)[ORIENTATION] == 1


def test_10bit_heic_reads_as_16bit(tmp_path, portrait):
    rgb16 = np.asarray(portrait).astype(np.uint16) * 257
    src = tmp_path / "hdr.heic"
    pillow_heif.from_bytes(mode="RGB;16", size=(128, 96), data=rgb16.tobytes()).save(src, quality=95)

    photo = read_photo(src)

    assert photo.pixels.dtype == np.uint16 and photo.meta.bit_depth == 16
    assert diff(photo.pixels / 257.0, np.asarray(portrait)) < 3.0
    again = pillow_heif.open_heif(write_photo(photo, tmp_path / "hdr-out.heic"),
                                  convert_hdr_to_8bit=False)
    assert again.info["bit_depth"] == 10


def test_heic_without_pillow_heif_names_the_fix(tmp_path, portrait, monkeypatch):
    src = tmp_path / "IMG_1.heic"
    save_heic(src, portrait)
    real_import = builtins.__import__

    def no_pillow_heif(name, *args, **kwargs):
        if name == "pillow_heif":
            raise ImportError("No module named 'pillow_heif'")
        return real_import(name, *args, **kwargs)

    photo = read_photo(src)
    monkeypatch.setattr(builtins, "__import__", no_pillow_heif)
    with pytest.raises(PhotoError) as info:
        read_photo(src)
    assert str(info.value) == (f"{src}: reading a HEIC/HEIF photo needs the 'pillow-heif' package; "
                               "install it with 'pip install pillow-heif'")
    out = tmp_path / "out" / "IMG_1.heic"
    with pytest.raises(PhotoError) as info:
        write_photo(photo, out)
    assert str(info.value) == (f"{out}: writing a HEIC/HEIF photo needs the 'pillow-heif' package; "
                               "install it with 'pip install pillow-heif'")
    assert list(out.parent.iterdir()) == []  # no partial file


def test_avif_without_pillow_support_says_so(tmp_path, portrait, monkeypatch):
    src = tmp_path / "a.png"
    portrait.save(src)
    photo = read_photo(src)
    real_check = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == "avif" else real_check(name))
    with pytest.raises(PhotoError) as info:
        write_photo(photo, tmp_path / "a.avif")
    assert str(info.value) == (f"{tmp_path / 'a.avif'}: this Pillow was built without AVIF support; "
                               "upgrade it with 'pip install --upgrade pillow', or write .heic or .jpg")


@needs_avif
def test_avif_reads_and_writes_back_with_exif_and_xmp(tmp_path, portrait):
    src = tmp_path / "shot.avif"
    portrait.save(src, quality=90, exif=phone_exif(), xmp=XMP)

    photo = read_photo(src)
    assert photo.meta.format == "AVIF" and photo.pixels.shape == (96, 128, 3)

    out = write_photo(photo, tmp_path / "out.avif")
    with Image.open(out) as im:
        assert im.format == "AVIF"
        assert im.getexif()[MODEL] == "iPhone 12"
        assert im.info["xmp"] == XMP
        assert diff(np.asarray(im.convert("RGB")), np.asarray(portrait)) < 4.0


# --- 16-bit TIFF, APNG ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rgba16(portrait) -> np.ndarray:
    """16-bit RGBA whose low bytes matter; alpha ≥ 32768 so un-premultiplying is exact to ±1."""
    base = np.asarray(portrait).astype(np.uint16) * 257
    noise = np.random.default_rng(1).integers(0, 200, base.shape, dtype=np.uint16)
    alpha = np.tile(np.linspace(32768, 65535, 128).astype(np.uint16), (96, 1))
    return np.dstack([np.minimum(base + noise, 65535), alpha]).astype(np.uint16)


@pytest.mark.parametrize(
    ("name", "alpha", "layout"),
    [
        ("tiff_strip_planar_16bit_RGB.tiff", None, {"planarconfig": "separate"}),
        ("tiff_tiled_planar_16bit_RGBa.tiff", "assocalpha",
         {"planarconfig": "separate", "tile": (32, 32)}),
        ("tiff_16bit_RGBa.tiff", "assocalpha", {}),
        ("tiff_16bit_RGBA_planar.tiff", "unassalpha", {"planarconfig": "separate"}),
    ],
)
def test_16bit_planar_tiled_and_rgba_tiffs_read_and_write(tmp_path, rgba16, name, alpha, layout):
    straight = rgba16 if alpha else rgba16[..., :3]
    stored = straight.copy()
    if alpha == "assocalpha":  # RGBa: colour premultiplied by alpha
        stored[..., :3] = np.rint(straight[..., :3] * (straight[..., 3:] / 65535.0)).astype(np.uint16)
    data = np.moveaxis(stored, 2, 0) if layout.get("planarconfig") == "separate" else stored
    src = tmp_path / name
    tifffile.imwrite(src, data, photometric="rgb", compression="zlib",
                     extrasamples=[alpha] if alpha else None, **layout)

    photo = read_photo(src)

    assert photo.pixels.dtype == np.uint16 and photo.pixels.shape == straight.shape
    assert np.abs(photo.pixels.astype(int) - straight).max() <= (1 if alpha == "assocalpha" else 0)
    out = write_photo(photo, tmp_path / "out.tif")
    assert np.array_equal(tifffile.imread(out), photo.pixels)
    assert np.array_equal(read_photo(out).pixels, photo.pixels)


def test_rotated_planar_16bit_tiff_comes_out_upright(tmp_path, rgba16):
    upright = rgba16[..., :3]
    src = tmp_path / "rot.tif"
    tifffile.imwrite(src, np.moveaxis(np.rot90(upright, 1), 2, 0), photometric="rgb",
                     planarconfig="separate", extratags=[(274, "H", 1, 6, True)])

    assert np.array_equal(read_photo(src).pixels, upright)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    found, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        found.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return found


def apng16(frames: list[np.ndarray]) -> bytes:
    """A 16-bit RGB APNG: OpenCV encodes each frame, the chunks are put together here."""
    encoded = [png_chunks(cv2.imencode(".png", f[..., ::-1])[1].tobytes()) for f in frames]
    h, w = frames[0].shape[:2]
    out = [b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", encoded[0][0][1]),
           png_chunk(b"acTL", struct.pack(">II", len(frames), 0))]
    seq = 0
    for i, chunks in enumerate(encoded):
        out.append(png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, w, h, 0, 0, 1, 10, 0, 0)))
        seq += 1
        for kind, body in chunks:
            if kind == b"IDAT" and i == 0:
                out.append(png_chunk(b"IDAT", body))
            elif kind == b"IDAT":
                out.append(png_chunk(b"fdAT", struct.pack(">I", seq) + body))
                seq += 1
    out.append(png_chunk(b"IEND", b""))
    return b"".join(out)


def test_16bit_apng_gives_its_first_frame_at_16_bits(tmp_path, rgba16):
    first, second = rgba16[..., :3], rgba16[..., :3] // 3
    src = tmp_path / "anim16.png"
    src.write_bytes(apng16([first, second]))
    with Image.open(src) as im:
        assert im.n_frames == 2  # a real APNG, as Pillow sees it

    photo = read_photo(src)

    assert photo.pixels.dtype == np.uint16 and np.array_equal(photo.pixels, first)
    assert photo.meta.frames == 2


# --- BMP --------------------------------------------------------------------------------


def bmp_file(width: int, height: int, bits: int, pixel_rows: bytes, *, compression: int = 0,
             masks: tuple[int, ...] = (), header: int = 40, icc: bytes = b"") -> bytes:
    """A BMP as the format describes it; rows bottom-up, each padded to 4 bytes."""
    info = struct.pack("<IiiHHIIiiII", header, width, height, 1, bits, compression,
                       len(pixel_rows), 2835, 2835, 0, 0)
    info += b"".join(struct.pack("<I", m) for m in masks)
    if header == 124:
        info = info.ljust(56, b"\x00")
        info += struct.pack("<I", 0x4D424544 if icc else 0x73524742) + bytes(36 + 12)
        info += struct.pack("<IIII", 4, 124 + len(pixel_rows) if icc else 0, len(icc), 0)
    offset = 14 + len(info)
    size = offset + len(pixel_rows) + len(icc)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, offset) + info + pixel_rows + icc


def test_rgb565_bmp_is_read(tmp_path):
    colours = np.array([[0xF800, 0x07E0, 0x001F, 0xFFFF], [0x0000, 0x8410, 0xF81F, 0x07FF]], "<u2")
    rows = colours[::-1].tobytes()  # bottom row first; 8 bytes a row, already padded
    src = tmp_path / "565.bmp"
    src.write_bytes(bmp_file(4, 2, 16, rows, compression=3, masks=(0xF800, 0x07E0, 0x001F)))

    photo = read_photo(src)

    assert photo.pixels.dtype == np.uint8 and photo.pixels.shape == (2, 4, 3)
    assert photo.pixels[0].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]
    assert photo.pixels[1, 0].tolist() == [0, 0, 0]


def test_32bit_bmp_keeps_its_alpha(tmp_path, rgba16):
    rgba = np.rint(rgba16 / 257.0).astype(np.uint8)
    rgba[:, :16, 3] = 0  # a fully transparent strip
    bgra = rgba[::-1][..., [2, 1, 0, 3]]
    src = tmp_path / "icon.bmp"
    src.write_bytes(bmp_file(128, 96, 32, bgra.tobytes()))  # BITMAPINFOHEADER, BI_RGB

    photo = read_photo(src)
    assert photo.has_alpha and np.array_equal(photo.pixels, rgba)

    out = write_photo(photo, tmp_path / "out.bmp")
    with Image.open(out) as im:  # any reader sees the alpha: a V5 header with an alpha mask
        assert im.mode == "RGBA" and np.array_equal(np.asarray(im), rgba)
    assert np.array_equal(read_photo(out).pixels, rgba)


def test_32bit_bmp_with_zero_fourth_byte_has_no_alpha(tmp_path, portrait):
    bgrx = np.dstack([np.asarray(portrait)[::-1][..., ::-1], np.zeros((96, 128), np.uint8)])
    src = tmp_path / "plain.bmp"
    src.write_bytes(bmp_file(128, 96, 32, bgrx.tobytes()))

    photo = read_photo(src)

    assert photo.pixels.shape == (96, 128, 3) and np.array_equal(photo.pixels, np.asarray(portrait))


def test_bmp_keeps_its_icc_profile(tmp_path, portrait, srgb_icc):
    bgr = np.asarray(portrait)[::-1][..., ::-1]
    src = tmp_path / "profiled.bmp"
    src.write_bytes(bmp_file(128, 96, 24, bgr.tobytes(), header=124, icc=srgb_icc))

    photo = read_photo(src)
    assert photo.meta.icc == srgb_icc and np.array_equal(photo.pixels, np.asarray(portrait))

    again = read_photo(write_photo(photo, tmp_path / "out.bmp"))
    assert again.meta.icc == srgb_icc and np.array_equal(again.pixels, photo.pixels)
    with Image.open(write_photo(photo, tmp_path / "out.png")) as im:
        assert im.info["icc_profile"] == srgb_icc


# --- tRNS transparency ----------------------------------------------------------------------


def gray_png(width: int, bits: int, rows: list[bytes], key: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, len(rows), bits, 0, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"tRNS", struct.pack(">H", key))
            + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("bits", "row", "key", "gray", "alpha"),
    [
        (1, bytes([0b10100000]), 1, [255, 0, 255, 0], [0, 255, 0, 255]),
        (2, bytes([0b00011011]), 2, [0, 85, 170, 255], [255, 255, 0, 255]),
        (16, struct.pack(">4H", 0, 1000, 65535, 1000), 1000, [0, 1000, 65535, 1000],
         [65535, 0, 65535, 0]),
    ],
    ids=["1-bit", "2-bit", "16-bit"],
)
def test_gray_png_transparency_key_becomes_alpha(tmp_path, bits, row, key, gray, alpha):
    src = tmp_path / f"key{bits}.png"
    src.write_bytes(gray_png(4, bits, [row, row], key))

    photo = read_photo(src)

    assert photo.pixels.shape == (2, 4, 2)
    assert photo.pixels[0, :, 0].tolist() == gray and photo.pixels[0, :, 1].tolist() == alpha
    again = read_photo(write_photo(photo, tmp_path / "out.png"))
    assert np.array_equal(again.pixels, photo.pixels)


# --- what is not supported says so ------------------------------------------------------------


def tiff_with_jpeg2000_strip(path: Path) -> None:
    """A little-endian RGB TIFF whose one strip is a JPEG 2000 codestream (compression 34712,
    as slide scanners write); Pillow encodes the codestream."""
    stream = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 80, 40)).save(stream, "JPEG2000")
    strip = stream.getvalue()
    tags = [(256, 3, 1, 16), (257, 3, 1, 16), (258, 3, 3, None), (259, 3, 1, 34712), (262, 3, 1, 2),
            (273, 4, 1, None), (277, 3, 1, 3), (278, 3, 1, 16), (279, 4, 1, len(strip))]
    ifd_size = 2 + 12 * len(tags) + 4
    bits_at = 8 + ifd_size
    strip_at = bits_at + 6
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        value = {258: bits_at, 273: strip_at}.get(tag, value)
        ifd += struct.pack("<HHI", tag, kind, count) + struct.pack("<HH" if kind == 3 and count == 1 else "<I",
                                                                   *((value, 0) if kind == 3 and count == 1 else (value,)))
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
                     + struct.pack("<3H", 8, 8, 8) + strip)


@pytest.mark.parametrize(
    ("name", "make", "what", "fix"),
    [
        ("slide.tif", tiff_with_jpeg2000_strip,
         "a TIFF compressed with JPEG2000 (compression 34712)",
         "save it as an 8- or 16-bit RGB TIFF or PNG in an image editor"),
        ("float.tif",
         lambda p: tifffile.imwrite(p, np.ones((8, 8, 3), np.float32), photometric="rgb"),
         "a TIFF with 32-bit floating-point samples",
         "save it as an 8- or 16-bit RGB TIFF or PNG in an image editor"),
        ("signed.tif",
         lambda p: tifffile.imwrite(p, np.ones((8, 8, 3), np.int16), photometric="rgb"),
         "a TIFF with 16-bit signed samples",
         "save it as an 8- or 16-bit RGB TIFF or PNG in an image editor"),
        ("deep.tif",
         lambda p: tifffile.imwrite(p, np.ones((8, 8, 3), np.uint32), photometric="rgb"),
         "a TIFF with 32-bit samples",
         "save it as an 8- or 16-bit RGB TIFF or PNG in an image editor"),
        ("embedded-png.bmp",
         lambda p: p.write_bytes(bmp_file(8, 8, 0, cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1]
                                          .tobytes(), compression=5)),
         "a BMP holding PNG data (compression 5)",
         "convert it to PNG in an image editor"),
        ("deep.bmp",
         lambda p: p.write_bytes(bmp_file(2, 2, 64, bytes(32))),
         "a BMP with 64-bit pixels",
         "convert it to PNG in an image editor"),
    ],
)
def test_whole_file_of_an_unsupported_kind_says_what_is_unsupported(tmp_path, name, make, what, fix):
    path = tmp_path / name
    make(path)

    with pytest.raises(PhotoError) as info:
        read_photo(path)

    assert str(info.value) == f"{path}: {what} is not supported; {fix}"


def test_cut_short_tiff_is_still_reported_as_truncated(tmp_path, rgba16):
    whole = io.BytesIO()
    tifffile.imwrite(whole, np.ones((64, 64, 3), np.float32), photometric="rgb")
    path = tmp_path / "cut.tif"
    path.write_bytes(whole.getvalue()[:2000])

    with pytest.raises(PhotoError, match=r"cut\.tif: the file is truncated or damaged .*re-copy"):
        read_photo(path)


def test_a_pdf_named_as_a_photo_is_named_for_what_it_is(tmp_path):
    path = tmp_path / "scan.jpg"
    path.write_bytes(b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
                     b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")

    with pytest.raises(PhotoError) as info:
        read_photo(path)

    assert str(info.value) == (f"{path}: not a photo facefix can read (it is a PDF document); "
                               "check the file or convert it to JPEG, PNG or TIFF")


def test_planar_16bit_tiff_without_its_codec_names_the_package(tmp_path, rgba16, monkeypatch):
    src = tmp_path / "planar-lzw.tif"
    tifffile.imwrite(src, np.moveaxis(rgba16[..., :3], 2, 0), photometric="rgb",
                     planarconfig="separate", compression="zlib")

    def codec_missing(self, *args, **kwargs):  # what tifffile says for LZW without imagecodecs
        raise ValueError("<COMPRESSION.ADOBE_DEFLATE: 8> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", codec_missing)
    with pytest.raises(PhotoError) as info:
        read_photo(src)
    assert str(info.value) == (f"{src}: decoding a 16-bit planar TIFF compressed with ADOBE_DEFLATE "
                               "needs the 'imagecodecs' package; install it with 'pip install imagecodecs'")


def test_heic_over_the_pixel_limit_is_refused_before_decoding(tmp_path, portrait):
    src = tmp_path / "huge.heic"
    save_heic(src, portrait)

    with pytest.raises(PhotoError, match=r"huge\.heic: 128×96 = 12,288 pixels, over the limit"):
        read_photo(src, max_pixels=1000)


def test_cut_short_heic_is_reported_as_truncated(tmp_path, portrait):
    src = tmp_path / "IMG_2.heic"
    save_heic(src, portrait)
    cut = tmp_path / "cut.heic"
    cut.write_bytes(src.read_bytes()[:-10])

    with pytest.raises(PhotoError, match=r"cut\.heic: the file is truncated or damaged \(.*\); re-copy it"):
        read_photo(cut)
