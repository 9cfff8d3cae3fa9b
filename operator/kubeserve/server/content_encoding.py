"""Inflate a compressed request body (``Content-Encoding: gzip`` or ``deflate``) within a limit.

What the server holds and parses is the inflated body, so the body limit applies to the
inflated size, counted while inflating: each piece that arrives is inflated into at most
what is left of the limit plus one byte, and one byte more than the limit refuses the
request (413). A gzip bomb (10 MB of zeros sent as 10 KB) therefore costs no more memory
than a plain body at the limit does; the compressed size is bounded by the same limit
before inflating, as any body is. Corrupt or truncated data is a 400; another coding, or
several stacked, a 415.

Inflating runs on the event loop as the pieces arrive: zlib inflates hundreds of MB/s, so
a 16 MiB body takes tens of milliseconds in total, in steps of one read each.
"""

from __future__ import annotations

import zlib

from kubeserve.server import errors

# Content coding -> zlib's wbits: gzip (RFC 1952), deflate as RFC 9110 defines it (the zlib
# format, RFC 1950). ``x-gzip`` is gzip's old name, which RFC 9110 still asks servers to take.
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


class UnsupportedEncoding(errors.ServerError):
    """A ``Content-Encoding`` the server cannot decode: 415."""

    status = 415


def inflater(header: bytes, limit: int) -> Inflater | None:
    """Return an Inflater for a ``Content-Encoding`` header value, or None for no coding.

    Raises UnsupportedEncoding for a coding other than gzip or deflate, or several.
    """
    codings = [c.strip().lower() for c in header.decode("latin-1").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) > 1:
        raise UnsupportedEncoding(
            f"content-encoding {', '.join(codings)!r}: stacked codings are not supported; "
            "send one of gzip or deflate"
        )
    coding = codings[0]
    if coding not in _WBITS:
        raise UnsupportedEncoding(
            f"content-encoding {coding[:30]!r} is not supported; send gzip, deflate or an "
            "uncompressed body"
        )
    return Inflater(coding, limit)


class Inflater:
    """Inflate one body, piece by piece, refusing it once it inflates past ``limit`` bytes."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.size = 0  # inflated bytes so far
        self.fed = False
        self._zlib = zlib.decompressobj(wbits=_WBITS[coding])

    def feed(self, data: bytes) -> bytes:
        """Return what ``data`` inflates to.

        Raises PayloadTooLarge past the limit and BadRequest for corrupt data, or data after
        the stream's end (a second gzip member: no client sends one, and each would cost a
        new decompressor).
        """
        if not data:
            return b""
        self.fed = True
        if self._zlib.eof:
            raise errors.BadRequest(f"request body continues after its {self.coding} stream ends")
        room = self.limit - self.size
        try:
            # At most one byte past the room: enough to tell the body is too large.
            out = self._zlib.decompress(data, room + 1)
        except zlib.error as exc:
            raise errors.BadRequest(f"request body is not valid {self.coding}: {exc}") from None
        self.size += len(out)
        if self.size > self.limit:
            raise errors.PayloadTooLarge(
                f"request body inflates ({self.coding}) past the limit of {self.limit} bytes"
            )
        if self._zlib.unused_data:
            raise errors.BadRequest(f"request body continues after its {self.coding} stream ends")
        # Below the room, zlib took all of ``data`` (unconsumed_tail is empty).
        return out

    def finish(self) -> None:
        """Check that the stream ended: a truncated body is a 400, not a shorter request."""
        if self.fed and not self._zlib.eof:
            raise errors.BadRequest(
                f"request body is truncated: its {self.coding} stream does not end"
            )
