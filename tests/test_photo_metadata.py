"""Metadata of real photo libraries survives a restore: IPTC and the Photoshop block,
JPEG comments, PNG text and colour chunks, the MPF index, an upright EXIF (size and
thumbnail), the JFIF density and the JPEG encoding.

Every file is built here in tmp_path; each kept item is checked by reading the
written file back with Pillow, not with facefix's own reader.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import struct

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, IptcImagePlugin, PngImagePlugin

from facefix.photos import Photo, read_photo, write_photo

tifffile = pytest.importorskip("tifffile")

EXIF_IFD, EXIF_WIDTH, EXIF_HEIGHT = 0x8769, 0xA002, 0xA003


@pytest.fixture(scope="module")
def portrait(portrait_photo) -> Image.Image:
    """The astronaut at 128×96 (non-square, so a wrong rotation shows)."""
    with Image.open(portrait_photo) as im:
        return im.convert("RGB").resize((128, 128), Image.LANCZOS).crop((0, 16, 128, 112))


def diff(a, b) -> float:
    return float(np.abs(np.asarray(a).astype(np.float64) - np.asarray(b).astype(np.float64)).mean())


# --- IPTC, Photoshop block, comments ------------------------------------------------------

IPTC_RECORDS = [
    (1, 90, b"\x1b%G"),  # coded character set: UTF-8
    (2, 120, "Grandma's 80th birthday, Lisbon".encode()),
    (2, 25, b"family"),
    (2, 25, b"birthday"),
    (2, 80, "João Silva".encode()),
    (2, 116, b"(c) 2019 Silva family"),
    (2, 55, b"20190704"),
    (2, 60, b"183000+0100"),
]


def iptc_block() -> bytes:
    return b"".join(b"\x1c" + bytes([r, d]) + struct.pack(">H", len(v)) + v for r, d, v in IPTC_RECORDS)


def resource(rid: int, data: bytes) -> bytes:
    return b"8BIM" + struct.pack(">H", rid) + b"\x00\x00" + struct.pack(">I", len(data)) + data + b"\x00" * (len(data) % 2)


def photoshop_block() -> bytes:
    resolution = struct.pack(">IHHIHH", 300 << 16, 1, 1, 300 << 16, 1, 1)
    return resource(0x03ED, resolution) + resource(0x0404, iptc_block())


def app13(block: bytes) -> bytes:
    body = b"Photoshop 3.0\x00" + block
    return b"\xff\xed" + struct.pack(">H", len(body) + 2) + body


def com(text: bytes) -> bytes:
    return b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text


def expected_iptc() -> dict:
    found: dict = {}
    for r, d, v in IPTC_RECORDS:
        found.setdefault((r, d), []).append(v)
    return {k: v[0] if len(v) == 1 else v for k, v in found.items()}


def comments_of(im: Image.Image) -> list[bytes]:
    return [body for name, body in im.applist if name == "COM"]


@pytest.fixture
def captioned_jpeg(tmp_path, portrait):
    src = tmp_path / "birthday.jpg"
    portrait.save(src, quality=88, progressive=True,
                  extra=app13(photoshop_block()) + com(b"scanned by Dad, 2004") + com(b"album 3, page 12"))
    with Image.open(src) as im:  # the test file is what a library holds
        assert IptcImagePlugin.getiptcinfo(im) == expected_iptc()
        assert comments_of(im) == [b"scanned by Dad, 2004", b"album 3, page 12"]
    return src


def test_jpeg_keeps_iptc_photoshop_block_comments_and_progressive_encoding(tmp_path, captioned_jpeg):
    photo = read_photo(captioned_jpeg)
    out = write_photo(photo.with_rgb(photo.rgb_float()), tmp_path / "out" / "birthday.jpg")

    with Image.open(out) as im, Image.open(captioned_jpeg) as src:
        assert IptcImagePlugin.getiptcinfo(im) == expected_iptc()
        assert im.info["photoshop"] == src.info["photoshop"]  # the whole block, 0x03ED too
        assert comments_of(im) == [b"scanned by Dad, 2004", b"album 3, page 12"]
        assert im.info.get("progressive") == 1
        assert im.quantization == src.quantization  # the source's own tables


def test_iptc_goes_to_tiff_and_back_to_jpeg(tmp_path, captioned_jpeg):
    tif = write_photo(read_photo(captioned_jpeg), tmp_path / "birthday.tif")
    with Image.open(tif) as im:
        assert IptcImagePlugin.getiptcinfo(im) == expected_iptc()

    jpg = write_photo(read_photo(tif), tmp_path / "again.jpg")
    with Image.open(jpg) as im:
        assert IptcImagePlugin.getiptcinfo(im) == expected_iptc()


def test_iptc_stored_as_longs_in_a_tiff_is_kept(tmp_path, portrait):
    src = tmp_path / "photoshop.tif"
    block = iptc_block()
    block += b"\x00" * (-len(block) % 4)  # Photoshop pads IPTC to whole LONGs
    longs = struct.unpack(f"<{len(block) // 4}I", block)
    tifffile.imwrite(src, np.asarray(portrait), photometric="rgb",
                     extratags=[(33723, "I", len(longs), longs, True)])  # Pillow writes one LONG only

    out = write_photo(read_photo(src), tmp_path / "out.jpg")

    with Image.open(out) as im:
        assert IptcImagePlugin.getiptcinfo(im) == expected_iptc()


def test_iptc_in_16bit_tiff_is_kept(tmp_path, captioned_jpeg):
    photo = read_photo(captioned_jpeg)
    deep = Photo(photo.pixels.astype(np.uint16) * 257, photo.meta)

    out = write_photo(deep, tmp_path / "deep.tif")

    with Image.open(out) as im:
        assert IptcImagePlugin.getiptcinfo(im) == expected_iptc()


def test_a_format_without_iptc_says_it_is_dropped(tmp_path, captioned_jpeg, caplog):
    with caplog.at_level(logging.WARNING, logger="facefix"):
        write_photo(read_photo(captioned_jpeg), tmp_path / "out.webp")
    assert "WEBP cannot carry IPTC, comments; written without" in caplog.text


# --- PNG chunks ------------------------------------------------------------------------------


def png_info() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Grandpa on the pier")
    info.add_text("Software", "EpsonScan 2.1")
    info.add_text("Creation Time", "2004:06:12 10:00:00", zip=True)
    info.add_itxt("Title", "Großvater am Steg", lang="de", tkey="Titel")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    info.add(b"gAMA", struct.pack(">I", 45455))
    info.add(b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000))
    info.add(b"tIME", struct.pack(">HBBBBB", 2004, 6, 12, 10, 0, 0))
    return info


def png_chunk_types(data: bytes) -> list[bytes]:
    found, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        found.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return found


@pytest.mark.parametrize("depth", [8, 16])
def test_png_text_and_colour_chunks_are_kept(tmp_path, portrait, depth):
    src = tmp_path / "pier.png"
    portrait.save(src, pnginfo=png_info())
    photo = read_photo(src)
    if depth == 16:
        photo = Photo(photo.pixels.astype(np.uint16) * 257, photo.meta)

    out = write_photo(photo, tmp_path / f"out{depth}.png")

    with Image.open(out) as im, Image.open(src) as before:
        im.load()
        before.load()
        assert im.text == before.text  # Comment, Software, Creation Time, Title (with its language)
        assert im.text["Title"].lang == "de" and im.text["Title"].tkey == "Titel"
        assert im.info["gamma"] == before.info["gamma"] == 0.45455
        assert im.info["chromaticity"] == before.info["chromaticity"]
    types = png_chunk_types(out.read_bytes())
    assert types.count(b"iTXt") == 2 and types.count(b"tIME") == 1 and b"zTXt" in types
    assert types.index(b"gAMA") < types.index(b"IDAT")


def test_png_srgb_chunk_is_kept(tmp_path, portrait):
    info = PngImagePlugin.PngInfo()
    info.add(b"sRGB", b"\x00")
    src = tmp_path / "srgb.png"
    # no ICC profile: with one, the sRGB chunk must not be written (PNG spec; Pillow drops it)
    Image.fromarray(np.asarray(portrait)).save(src, pnginfo=info)

    with Image.open(write_photo(read_photo(src), tmp_path / "out.png")) as im:
        assert im.info["srgb"] == 0


# --- MPF ---------------------------------------------------------------------------------------


def test_phone_jpeg_keeps_its_mpf_pictures_and_index(tmp_path, portrait):
    src = tmp_path / "IMG_0002.jpg"
    preview = portrait.resize((64, 48)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    portrait.save(src, "MPO", save_all=True, append_images=[preview], quality=90)
    with Image.open(src) as im:
        im.seek(1)
        second = np.asarray(im.convert("RGB"))

    out = write_photo(read_photo(src), tmp_path / "out" / "IMG_0002.jpg")

    with Image.open(out) as im:
        assert im.format == "MPO" and im.n_frames == 2
        assert im.mpinfo[0xB002][0]["Attribute"]["MPType"] == "Baseline MP Primary Image"
        assert diff(im.convert("RGB"), portrait) < 6.0  # JPEG, re-encoded once more
        im.seek(1)
        assert np.array_equal(np.asarray(im.convert("RGB")), second)  # the same bytes, not re-encoded


def test_mpf_pictures_are_turned_with_the_photo(tmp_path, portrait):
    # A gain map or preview lies over the photo as stored: turned upright with it.
    gain_map = portrait.convert("L").resize((64, 48))
    src = tmp_path / "PXL_0001.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    portrait.transpose(Image.Transpose.ROTATE_90).save(
        src, "MPO", save_all=True, append_images=[gain_map.transpose(Image.Transpose.ROTATE_90)],
        quality=92, exif=exif.tobytes())

    photo = read_photo(src)
    assert photo.pixels.shape == (96, 128, 3)
    out = write_photo(photo, tmp_path / "out.jpg")

    with Image.open(out) as im:
        assert im.n_frames == 2 and im.getexif().get(0x0112, 1) == 1
        im.seek(1)
        assert im.size == (64, 48) and im.getexif().get(0x0112, 1) == 1
        assert diff(im.convert("L"), gain_map) < 4.0


# --- EXIF after rotation --------------------------------------------------------------------


def exif_with_thumbnail(orientation: int, size: tuple[int, int], thumbnail: bytes) -> bytes:
    """Little-endian EXIF as cameras write it: IFD0 → Exif IFD (pixel size), IFD1 → JPEG thumbnail."""
    make = b"Canon\x00"
    ifd0, make_at, exif_ifd = 8, 50, 56
    ifd1 = exif_ifd + 2 + 2 * 12 + 4
    thumb_at = ifd1 + 2 + 3 * 12 + 4
    out = b"II*\x00" + struct.pack("<I", ifd0)
    out += struct.pack("<H", 3)
    out += struct.pack("<HHII", 0x010F, 2, len(make), make_at)
    out += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    out += struct.pack("<HHII", EXIF_IFD, 4, 1, exif_ifd)
    out += struct.pack("<I", ifd1) + make
    out += struct.pack("<H", 2)
    out += struct.pack("<HHII", EXIF_WIDTH, 4, 1, size[0])
    out += struct.pack("<HHIHH", EXIF_HEIGHT, 3, 1, size[1], 0)
    out += struct.pack("<I", 0)
    out += struct.pack("<H", 3)
    out += struct.pack("<HHIHH", 0x0103, 3, 1, 6, 0)
    out += struct.pack("<HHII", 0x0201, 4, 1, thumb_at)
    out += struct.pack("<HHII", 0x0202, 4, 1, len(thumbnail))
    out += struct.pack("<I", 0)
    assert len(out) == thumb_at
    return b"Exif\x00\x00" + out + thumbnail


def thumbnail_of(exif: Image.Exif, raw: bytes) -> Image.Image:
    ifd1 = exif.get_ifd(ExifTags.IFD.IFD1)
    body = raw[6:] if raw.startswith(b"Exif") else raw
    start, length = ifd1[0x0201], ifd1[0x0202]
    return Image.open(io.BytesIO(body[start:start + length]))


def test_rotation_updates_exif_image_size_and_turns_the_thumbnail(tmp_path, portrait):
    sideways = portrait.transpose(Image.Transpose.ROTATE_90)  # stored as orientation 6: 96×128
    thumb = io.BytesIO()
    sideways.resize((30, 40)).save(thumb, "JPEG", quality=90)
    src = tmp_path / "IMG_0100.jpg"
    sideways.save(src, quality=95, exif=exif_with_thumbnail(6, sideways.size, thumb.getvalue()))

    photo = read_photo(src)
    assert photo.pixels.shape == (96, 128, 3)
    upscaled = photo.with_rgb(cv2.resize(photo.rgb_float(), (256, 192)))

    for written, size in ((photo, (128, 96)), (upscaled, (256, 192))):
        out = write_photo(written, tmp_path / f"out{size[0]}.jpg")
        with Image.open(out) as im:
            exif = im.getexif()
            assert exif[0x0112] == 1 and exif[0x010F] == "Canon"
            sub = exif.get_ifd(EXIF_IFD)
            assert (sub[EXIF_WIDTH], sub[EXIF_HEIGHT]) == size
            with thumbnail_of(exif, im.info["exif"]) as small:
                assert small.size == (40, 30)  # upright, as the photo
                assert diff(small.convert("RGB"), portrait.resize((40, 30))) < 12.0


# --- JFIF density and JPEG encoding ---------------------------------------------------------


def test_jfif_density_without_units_stays_without_units(tmp_path, portrait):
    exif = Image.Exif()
    exif[0x011A], exif[0x011B], exif[0x0128] = 72.0, 72.0, 2  # a nominal 72 dpi in EXIF
    src = tmp_path / "no-density.jpg"
    portrait.save(src, exif=exif)
    with Image.open(src) as im:
        assert im.info["jfif_unit"] == 0  # JFIF says: aspect ratio only

    photo = read_photo(src)
    assert photo.meta.dpi is None

    with Image.open(write_photo(photo, tmp_path / "out.jpg")) as im:
        assert im.info["jfif_unit"] == 0 and im.info["jfif_density"] == (1, 1)

    scan = tmp_path / "scan.jpg"
    portrait.save(scan, dpi=(300, 300))
    with Image.open(write_photo(read_photo(scan), tmp_path / "scan-out.jpg")) as im:
        assert im.info["jfif_unit"] == 1 and im.info["dpi"] == (300, 300)


@pytest.mark.parametrize("sampling", ["4:4:0", "4:1:1"])
def test_chroma_subsampling_pillow_cannot_write_is_kept(tmp_path, portrait, sampling):
    factor = {"4:4:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440,
              "4:1:1": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411}[sampling]
    luma = {"4:4:0": (1, 2), "4:1:1": (4, 1)}[sampling]
    src = tmp_path / "camera.jpg"
    ok, data = cv2.imencode(".jpg", np.asarray(portrait)[..., ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, 85, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, factor,
                             cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    src.write_bytes(data.tobytes())
    with Image.open(src) as im:
        assert im.layer[0][1:3] == luma
    exif = Image.Exif()
    exif[0x010F] = "Fujifilm"

    photo = read_photo(src)
    assert photo.meta.jpeg_subsampling == sampling and photo.meta.jpeg_progressive
    photo = Photo(photo.pixels, dataclasses.replace(photo.meta, exif=exif.tobytes(), comments=(b"kept",)))

    out = write_photo(photo, tmp_path / "out.jpg")

    with Image.open(out) as im:
        assert im.layer[0][1:3] == luma and all(layer[1:3] == (1, 1) for layer in im.layer[1:])
        assert im.info.get("progressive") == 1
        assert im.quantization == Image.open(src).quantization  # quality 85 found and reused
        assert im.getexif()[0x010F] == "Fujifilm" and comments_of(im) == [b"kept"]
        assert diff(im.convert("RGB"), photo.pixels) < 2.0  # one more generation of the same encoding
