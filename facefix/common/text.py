"""Names as text: whether a file name Python holds can be written as UTF-8.

A name with a byte that is not UTF-8 (possible on Linux file systems) reaches
Python surrogate-escaped (``os.fsdecode``); such a ``str`` cannot be encoded
as UTF-8, so whatever stores or prints it (the run record, the JSON report)
keeps its raw bytes (``os.fsencode``) as well.
"""

from __future__ import annotations


def is_utf8(text: str) -> bool:
    """True when ``text`` encodes as UTF-8: False for a surrogate-escaped (non-UTF-8) file name."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
