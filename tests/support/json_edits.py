"""One-byte edits of a JSON text, for tests that check a parser refuses what orjson refuses."""

from __future__ import annotations


def edit(text: bytearray, at: int, how: str, byte: int) -> None:
    """Insert `byte` before `at`, or delete or replace the byte at `at` (if there is one)."""
    if how == "insert":
        text.insert(at, byte)
    elif at < len(text):
        if how == "delete":
            del text[at]
        else:
            text[at] = byte
