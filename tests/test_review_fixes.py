"""Review fixes: one UTF-8 check for file names (run record and JSON report)."""

from __future__ import annotations

import base64
import os

from facefix.common.text import is_utf8
from facefix.restore.report import json_safe


def test_one_utf8_check_tells_non_utf8_file_names_apart():
    latin1 = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name on a Linux file system: surrogate-escaped
    assert is_utf8("photo.jpg") and is_utf8("café 東京.jpg") and is_utf8("")
    assert not is_utf8(latin1)
    # The report keeps the raw bytes of exactly the names the check calls non-UTF-8.
    for name in ("photo.jpg", "café.jpg", latin1):
        record = json_safe({"file": name, "output": name, "faces": 1})
        assert ("file_bytes" in record) == (not is_utf8(name)) == ("output_bytes" in record)
    assert base64.b64decode(json_safe({"file": latin1})["file_bytes"]) == b"caf\xe9.jpg"
