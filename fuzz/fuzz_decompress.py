#!/usr/bin/env python3
"""Fuzz request decompression (Content-Encoding) and response compression (Accept-Encoding).

Input layout:

    byte 0      bit 7 clear: decompress. The Content-Encoding is CODINGS[b % len], or, for the
                last slot, raw header text: the next byte is its length n, then n bytes as latin-1
                bit 7 set: compress; the next byte is the Accept-Encoding length n, then n bytes
                (latin-1), then a byte that says where to cut the rest into two chunks
    byte 1      (decompress) the size limit: LIMITS[b % len]
    the rest    the body (decompress) or the response chunks (compress)

Properties:

- decompress returns bytes no longer than the limit, or raises InvalidRequest (corrupt or
  truncated stream), PayloadTooLarge (413, only when the stream really inflates past the limit
  or the body itself is over it) or Unsupported (501, an unknown coding); nothing else escapes;
- what it returns is what an independent decoder makes of the same body: gzip.decompress for
  gzip, zlib.decompress (zlib stream, else raw deflate) for deflate; identity returns the body
  itself;
- choose_encoding names gzip, deflate or nothing; compress then produces a body that
  decompress turns back into the chunks, labelled with the coding chosen.
"""

from __future__ import annotations

import gzip
import sys
import zlib

from pyserver.errors import InvalidRequest, PayloadTooLarge, ServerError, Unsupported
from pyserver.protocol.compression import choose_encoding, compress, decompress

CODINGS: tuple[str | None, ...] = (
    None, "gzip", "deflate", "x-gzip", "identity", "", "gzip, identity", "deflate, gzip",
    "gzip, gzip", "GZIP", " deflate ", "br", "identity, deflate", None,  # last: raw text
)
LIMITS = (0, 1, 16, 100, 1000, 4096, 65536, 1 << 20)
_RAW_CODING = len(CODINGS) - 1
_COMPRESS = 0x80


def pack_decompress(body: bytes, coding: str | None, limit: int) -> bytes:
    """A fuzz input that decompresses `body` as `coding` under `limit` (for seeds)."""
    head = bytes([CODINGS.index(coding), LIMITS.index(limit)])
    return head + body


def pack_compress(chunks: tuple[bytes, bytes], accept: str) -> bytes:
    raw = accept.encode("latin-1")
    return bytes([_COMPRESS, len(raw)]) + raw + bytes([len(chunks[0]) % 256]) + b"".join(chunks)


def _reference(body: bytes, coding: str) -> bytes:
    """What an independent decoder makes of a body in one coding (unbounded: fuzz inputs are
    small, so even a bomb inflates to a few MB at most)."""
    if coding in ("identity", ""):
        return body
    if coding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if coding != "deflate":
        raise ValueError(f"no reference decoder for {coding!r}")
    try:
        return zlib.decompress(body, 15)
    except zlib.error:
        return zlib.decompress(body, -15)


def _codings(header: str) -> list[str]:
    return [c.strip().lower() for c in header.split(",")]


def _check_decompress(coding: str | None, limit: int, body: bytes) -> None:
    try:
        out = decompress(body, coding, limit)
    except PayloadTooLarge:
        if len(body) > limit:
            return
        assert coding is not None
        data = body
        try:
            for c in reversed(_codings(coding)):
                data = _reference(data, c)  # the true output: it must really be over the limit
        except (zlib.error, EOFError, OSError, ValueError):
            return  # corrupt (or an unknown coding) further on: refusing it as too large once past the limit is fine
        assert len(data) > limit, (coding, limit, len(data))
        return
    except Unsupported:
        assert coding is not None
        assert any(c not in ("identity", "", "gzip", "x-gzip", "deflate")
                   for c in _codings(coding)), coding
        return
    except InvalidRequest:
        return  # corrupt or truncated: the independent decoder may be more lenient (padding)
    except ServerError as exc:
        raise AssertionError(f"unexpected {exc!r}") from None
    assert type(out) is bytes and len(out) <= limit
    if coding is None or all(c in ("identity", "") for c in _codings(coding)):
        assert out is body
        return
    expected = body
    for c in reversed(_codings(coding)):
        expected = _reference(expected, c)
    assert out == expected, (coding, len(out), len(expected))


def _check_compress(accept: str, chunks: tuple[bytes, bytes]) -> None:
    chosen = choose_encoding(accept)
    assert chosen in ("gzip", "deflate", None), chosen
    out, used = compress(chunks, accept)
    assert used == chosen
    joined = b"".join(chunks)
    if used is None:
        assert out == list(chunks)
        return
    assert len(out) == 1
    body = bytes(out[0])
    assert decompress(body, used, max(len(joined), len(body))) == joined


def check_input(data: bytes) -> None:
    """The property function (libFuzzer's TestOneInput)."""
    if len(data) < 2:
        return
    if data[0] & _COMPRESS:
        n = data[1]
        accept = data[2:2 + n].decode("latin-1")
        rest = data[2 + n:]
        cut = rest[0] if rest else 0
        payload = rest[1:]
        _check_compress(accept, (payload[:cut], payload[cut:]))
        return
    slot = data[0] % len(CODINGS)
    limit = LIMITS[data[1] % len(LIMITS)]
    body = data[2:]
    coding = CODINGS[slot]
    if slot == _RAW_CODING:
        if not body:
            return
        n = body[0]
        coding = body[1:1 + n].decode("latin-1")
        body = body[1 + n:]
    _check_decompress(coding, limit, body)


if __name__ == "__main__":
    from _runner import run

    run(check_input)
    sys.exit(0)
