"""Content codings undone: an answer body sent gzip- or deflate-coded, inflated whole
(``decode_body``, the lean parser's) or a piece at a time (``Inflater``, a results file written to
disk as it arrives), never past a cap (a "zip bomb" is a ``ProtocolError``, retryable).
"""

from __future__ import annotations

import zlib

from .answer_caps import MAX_BODY, ProtocolError, size_text

__all__ = ["Inflater", "decode_body"]


def decode_body(content: bytes, encoding: str, cap: int = MAX_BODY) -> bytes:
    """Undo a content coding (``gzip``, ``deflate``: those asked for); at most ``cap`` bytes
    come out (a kilobyte of zeros deflated inflates a thousandfold: a "zip bomb"). Every gzip
    member is read, and a body cut short, or in another coding, is a ``ProtocolError``."""
    inflater = Inflater(encoding, cap)
    out = inflater.feed(content)
    inflater.end()
    return out


class Inflater:
    """``decode_body`` a piece at a time, for a body written to disk as it arrives (a batch's
    results file): the same codings, the same cap on what comes out, the same errors."""

    __slots__ = ("_cap", "_encoding", "_fed", "_out", "_wbits", "_z")

    def __init__(self, encoding: str, cap: int = MAX_BODY) -> None:
        if encoding in ("gzip", "x-gzip"):
            self._wbits = 31
        elif encoding == "deflate":
            self._wbits = 15  # zlib-wrapped per RFC 9110 8.4.1.2; some servers send it raw
        elif encoding in ("identity", ""):
            self._wbits = 0
        else:  # br, zstd...: never asked for (accept-encoding); refused once a byte comes
            self._wbits = -1
        self._encoding = encoding
        self._cap = cap
        self._out = 0  # bytes handed out so far
        self._fed = False  # any byte of the body seen yet
        self._z = zlib.decompressobj(self._wbits) if self._wbits not in (0, -1) else None

    def feed(self, data: bytes) -> bytes:
        """The next piece of the body, decoded; a ``ProtocolError`` past the cap or for a piece
        that does not decode."""
        if self._wbits == -1 and data:
            raise ProtocolError(
                f"a body in the {self._encoding!r} content coding, which was not asked for"
            )
        if self._z is None:
            out = data
        else:
            try:
                out = self._inflate(data)
            except zlib.error as e:
                raise ProtocolError(f"a {self._encoding} body that does not decode ({e})") from None
        self._out += len(out)
        if self._out > self._cap:
            raise ProtocolError(
                f"an answer body over the {size_text(self._cap)} cap once inflated (max_inflated)"
            )
        return out

    def end(self) -> None:
        """The body is over: a coded body that stopped short of its end is a ``ProtocolError``."""
        if self._z is not None and self._fed and not self._z.eof:
            raise ProtocolError(
                f"a {self._encoding} body that does not decode (incomplete or truncated stream)"
            )

    def _inflate(self, data: bytes) -> bytes:
        z = self._z
        assert z is not None
        if not data:
            return b""
        if not self._fed:
            self._fed = True
            if self._wbits == 15:
                try:
                    return self._more(data)
                except zlib.error:  # no zlib header: a raw deflate stream
                    self._wbits = -15
                    self._z = zlib.decompressobj(-15)
        return self._more(data)

    def _more(self, data: bytes) -> bytes:
        z = self._z
        assert z is not None
        if z.eof:  # past the end of a member: another gzip member, or zero padding
            if self._wbits != 31 or not data.strip(b"\0"):
                return b""
            z = self._z = zlib.decompressobj(31)
        out = z.decompress(data, self._cap + 1 - self._out)
        while z.eof and z.unused_data and self._wbits == 31 and self._out + len(out) <= self._cap:
            # a gzip body may hold several members one after another (RFC 1952 2.2): all are read
            rest = z.unused_data
            if not rest.strip(b"\0"):
                break  # zero padding after the last member, as gzip(1) allows
            z = self._z = zlib.decompressobj(31)
            out += z.decompress(rest, self._cap + 1 - self._out - len(out))
        return out
