"""Decoders' chatter (libtiff, libpng, libjpeg, Python warnings, tifffile's log) goes to the debug log, not the console.

The files are built here: a TIFF with a private tag of no valid type (Pillow's
libtiff prints an error line, tifffile logs one), a TIFF whose tag points past
the end of the file (Pillow's "Truncated File Read" warning), a 16-bit PNG
with a bad iCCP chunk (decoded by OpenCV, whose libpng prints a warning), a
16-bit LZW TIFF with a private tag (decoded by OpenCV when tifffile lacks
imagecodecs; OpenCV's logger prints libtiff's warning), a JPEG with 16-bit quantization tables (Pillow's libjpeg prints a note when it
is written again with them).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile
from clirun import facefix_process
from PIL import Image

from facefix.common.quiet import c_output_caught
from facefix.photos import read_photo, write_photo

#: What each library prints on its own, as the first words of a line.
RAW = ("TIFFFetchNormalTag", "libpng warning", "<TiffTag.fromfile>", "Caution: quantization tables",
       "UserWarning", "warnings.warn", "[ WARN:")


def _pixels(size: int = 24, dtype=np.uint8) -> np.ndarray:
    top = 65535 if dtype == np.uint16 else 255
    return (np.random.default_rng(0).random((size, size, 3)) * top).astype(dtype)


def tiff_untyped_tag(path: Path) -> Path:
    """A deflate TIFF (libtiff decodes it in Pillow) with private tag 65000 of type 0."""
    tifffile.imwrite(path, _pixels(), compression="zlib", extratags=[(65000, "H", 1, 7, True)])
    data = bytearray(path.read_bytes())
    entry = data.find(struct.pack("<HHI", 65000, 3, 1))
    struct.pack_into("<H", data, entry + 2, 0)
    path.write_bytes(bytes(data))
    return path


def tiff_tag_past_end(path: Path) -> Path:
    """A TIFF whose private tag's 100 bytes lie past the end of the file."""
    tifffile.imwrite(path, _pixels(), extratags=[(65000, "B", 100, bytes(range(100)), True)])
    data = bytearray(path.read_bytes())
    entry = data.find(struct.pack("<HHI", 65000, 1, 100))
    struct.pack_into("<I", data, entry + 8, 10**8)
    path.write_bytes(bytes(data))
    return path


def png16_bad_iccp(path: Path) -> Path:
    """A 16-bit RGB PNG whose iCCP chunk holds no profile."""
    import cv2

    png = cv2.imencode(".png", _pixels(dtype=np.uint16))[1].tobytes()
    body = b"bad\x00\x00" + zlib.compress(b"not a profile")
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    path.write_bytes(png[:33] + chunk + png[33:])  # after IHDR
    return path


def tiff16_lzw_private_tag(path: Path) -> Path:
    """A 16-bit RGB TIFF in LZW strips (OpenCV's encoder) with private tag 65000 added to its IFD."""
    import cv2

    data = bytearray(cv2.imencode(".tif", _pixels(dtype=np.uint16))[1].tobytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    entries = [bytes(data[ifd + 2 + 12 * i:ifd + 14 + 12 * i]) for i in range(count)]
    following = bytes(data[ifd + 2 + 12 * count:ifd + 6 + 12 * count])
    entries = sorted([*entries, struct.pack("<HHIHH", 65000, 3, 1, 7, 0)], key=lambda e: e[:2][::-1])
    data += b"\0" * (len(data) % 2)
    struct.pack_into("<I", data, 4, len(data))  # the new IFD, at the end
    path.write_bytes(bytes(data) + struct.pack("<H", len(entries)) + b"".join(entries) + following)
    return path


def jpeg_16bit_tables(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(_pixels(32)).save(buffer, "JPEG", qtables=[[300] * 64, [400] * 64])
    path.write_bytes(buffer.getvalue())
    return path


def raw_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.lstrip().startswith(RAW) or ".py:" in line]


@pytest.fixture
def debug_log(caplog):
    caplog.set_level(logging.DEBUG, logger="facefix.common.quiet")
    return caplog


def said(caplog, name: str) -> str:
    lines = [r.getMessage() for r in caplog.records
             if r.name == "facefix.common.quiet" and r.getMessage().startswith(name)]
    assert len(lines) == 1, lines  # one line per file
    return lines[0]


def test_libtiff_error_and_tifffile_log_go_to_the_debug_line(tmp_path, capfd, debug_log):
    photo = read_photo(tiff_untyped_tag(tmp_path / "private.tif"))
    assert photo.pixels.shape == (24, 24, 3)
    assert raw_lines(capfd.readouterr().err) == []
    line = said(debug_log, str(tmp_path / "private.tif"))
    assert "TIFFFetchNormalTag: Defined set_get_field_type of custom tag 65000" in line
    assert "tifffile: <TiffTag.fromfile> raised TiffFileError" in line


def test_python_warning_is_logged_without_its_source_path(tmp_path, capfd, debug_log):
    read_photo(tiff_tag_past_end(tmp_path / "cut.tif"))
    assert raw_lines(capfd.readouterr().err) == []
    line = said(debug_log, str(tmp_path / "cut.tif"))
    assert "UserWarning: Truncated File Read" in line and ".py" not in line


def test_opencv_libpng_warning_goes_to_the_debug_line(tmp_path, capfd, debug_log):
    photo = read_photo(png16_bad_iccp(tmp_path / "deep.png"))
    assert photo.pixels.dtype == np.uint16
    assert raw_lines(capfd.readouterr().err) == []
    assert "libpng warning: iCCP" in said(debug_log, str(tmp_path / "deep.png"))


@pytest.mark.skipif(importlib.util.find_spec("imagecodecs") is not None,
                    reason="with imagecodecs, tifffile decodes LZW and OpenCV is not used")
def test_opencv_logger_line_for_a_16bit_lzw_tiff_goes_to_the_debug_line(tmp_path, capfd, debug_log):
    photo = read_photo(tiff16_lzw_private_tag(tmp_path / "scan16.tif"))
    assert photo.pixels.dtype == np.uint16
    assert raw_lines(capfd.readouterr().err) == []
    line = said(debug_log, str(tmp_path / "scan16.tif"))
    assert "grfmt_tiff.cpp" in line and "Unknown field with tag 65000" in line


def test_libjpeg_note_on_writing_goes_to_the_debug_line(tmp_path, capfd, debug_log):
    photo = read_photo(jpeg_16bit_tables(tmp_path / "coarse.jpg"))
    capfd.readouterr()  # writing the test file itself printed the note
    write_photo(photo, tmp_path / "out.jpg")
    assert raw_lines(capfd.readouterr().err) == []
    assert "Caution: quantization tables are too coarse" in said(debug_log, str(tmp_path / "out.jpg"))


def test_a_clean_file_logs_nothing(tmp_path, capfd, debug_log):
    path = tmp_path / "clean.png"
    Image.fromarray(_pixels()).save(path)
    read_photo(path)
    assert capfd.readouterr().err == ""
    assert [r for r in debug_log.records if r.name == "facefix.common.quiet"] == []


def test_python_text_still_reaches_stderr_while_fd2_is_caught(tmp_path):
    # A real process, sys.stderr on fd 2 as in a terminal: C's write to fd 2 is caught, Python's print is not.
    script = ("import os, sys\n"
              "from facefix.common.quiet import c_output_caught, quiet_decoders\n"
              "with quiet_decoders('x'), c_output_caught():\n"
              "    os.write(2, b'from C\\n')\n"
              "    print('from Python', file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "from Python\n"


def test_threads_reading_at_once_each_get_their_own_line(tmp_path, debug_log):
    tiff, png = tiff_untyped_tag(tmp_path / "private.tif"), png16_bad_iccp(tmp_path / "deep.png")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(read_photo, [tiff, png] * 6))
    lines = [r.getMessage() for r in debug_log.records if r.name == "facefix.common.quiet"]
    assert len(lines) == 12
    for line in lines:
        own, other = ("TIFFFetchNormalTag", "libpng") if line.startswith(str(tiff)) else ("libpng", "TIFFFetch")
        assert own in line and other not in line, line


def test_c_output_window_outside_a_capture_is_refused():
    with pytest.raises(RuntimeError, match="inside quiet_decoders"), c_output_caught():
        pass


def test_folder_run_prints_no_raw_decoder_line_and_debug_shows_them(tmp_path):
    album = tmp_path / "album"
    album.mkdir()
    tiff_untyped_tag(album / "private.tif")
    tiff_tag_past_end(album / "cut.tif")
    png16_bad_iccp(album / "deep.png")
    # A real process: what C libraries write reaches file descriptor 2 only.
    plain = facefix_process("restore", album, "-o", tmp_path / "out", "--report", tmp_path / "r.jsonl")
    assert plain.returncode == 0, plain.stderr
    assert raw_lines(plain.stderr) == [] and "decoders said" not in plain.stderr
    verbose = facefix_process("-v", "restore", album, "-o", tmp_path / "out2", env={"COLUMNS": "1000"})
    assert verbose.returncode == 0, verbose.stderr
    assert raw_lines(verbose.stderr) == []
    debug = [line for line in verbose.stderr.splitlines() if "decoders said" in line]
    assert {Path(line.split()[1].rstrip(":")).name for line in debug} == {"private.tif", "cut.tif", "deep.png"}
