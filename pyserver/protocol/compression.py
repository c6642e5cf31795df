"""Content-Encoding for inference bodies: gzip and deflate, as tritonclient sends and reads them.

Requests are decompressed before the codec sees them (Inference-Header-Content-Length refers to
the uncompressed JSON), with the output bounded so a small hostile body cannot inflate past the
server's body limit. Responses are compressed when Accept-Encoding allows it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyserver.errors import InvalidRequest, PayloadTooLarge, Unsupported

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["DEFAULT_MAX_BODY", "choose_encoding", "compress", "decompress"]

DEFAULT_MAX_BODY = 64 * 1024 * 1024
"""The default limit on a request body, compressed or not (docs/protocol.md: 64 MiB)."""

# zlib window bits: 16 + 15 reads a gzip member, 15 a zlib stream, -15 raw deflate.
_GZIP_WBITS = 31
_ZLIB_WBITS = 15
_RAW_WBITS = -15
_CHUNK = 256 * 1024

_IDENTITY = ("identity", "")
_GZIP = ("gzip", "x-gzip")


def decompress(
    body: bytes, content_encoding: str | None, max_size: int = DEFAULT_MAX_BODY
) -> bytes:
    """The request body with its Content-Encoding undone (gzip, deflate; identity or None return
    the body itself). Several comma-separated codings are undone last first.

    Raises Unsupported (501) for any other coding, InvalidRequest (400) for a corrupt or
    truncated stream, PayloadTooLarge (413) as soon as the output would pass `max_size` bytes.
    """
    if len(body) > max_size:
        raise PayloadTooLarge(
            f"the request body has {len(body)} bytes, over the limit of {max_size}"
        )
    if content_encoding is None:
        return body
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    data = body
    for coding in reversed(codings):
        if coding in _IDENTITY:
            continue
        if coding in _GZIP:
            data = _inflate(data, _GZIP_WBITS, "gzip", max_size)
        elif coding == "deflate":
            data = _inflate_deflate(data, max_size)
        else:
            raise Unsupported(
                f"Content-Encoding {coding!r} is not supported; use gzip, deflate or identity"
            )
    return data


def _inflate_deflate(data: bytes, max_size: int) -> bytes:
    # HTTP's "deflate" is a zlib stream (what tritonclient sends); some clients send raw deflate.
    try:
        return _inflate(data, _ZLIB_WBITS, "deflate", max_size)
    except InvalidRequest:
        if len(data) >= 2 and (data[0] * 256 + data[1]) % 31 == 0 and data[0] & 0x0F == 8:
            raise  # it has a valid zlib header, so the stream itself is corrupt
        return _inflate(data, _RAW_WBITS, "deflate", max_size)


def _inflate(data: bytes, wbits: int, name: str, max_size: int) -> bytes:
    """Inflate every member of `data` (gzip allows several back to back), never holding more
    than max_size + 1 bytes of output."""
    out: list[bytes] = []
    produced = 0
    pending = data
    try:
        while True:
            stream = zlib.decompressobj(wbits)
            chunk = stream.decompress(pending, max_size - produced + 1)
            while True:
                produced += len(chunk)
                if produced > max_size:
                    raise PayloadTooLarge(
                        f"the {name} request body inflates past the limit of {max_size} bytes"
                    )
                out.append(chunk)
                if stream.eof or not stream.unconsumed_tail:
                    break
                chunk = stream.decompress(stream.unconsumed_tail, max_size - produced + 1)
            if not stream.eof:
                tail = stream.flush()
                produced += len(tail)
                if produced > max_size:
                    raise PayloadTooLarge(
                        f"the {name} request body inflates past the limit of {max_size} bytes"
                    )
                raise InvalidRequest(f"the {name} request body is truncated")
            pending = stream.unused_data
            if wbits != _GZIP_WBITS or not pending:
                break
    except zlib.error as exc:
        raise InvalidRequest(f"the {name} request body does not decompress: {exc}") from None
    return out[0] if len(out) == 1 else b"".join(out)


def choose_encoding(accept_encoding: str | None) -> str | None:
    """The response coding to use for an Accept-Encoding header: "gzip", "deflate" or None.

    Follows the header's q-values (highest wins, gzip before deflate on a tie; q=0 refuses; "*"
    stands for any coding not named).
    """
    if not accept_encoding:
        return None
    quality: dict[str, float] = {}
    for part in accept_encoding.split(","):
        token, _, params = part.partition(";")
        token = token.strip().lower()
        if not token:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        quality["gzip" if token == "x-gzip" else token] = q
    wildcard = quality.get("*", 0.0)
    best: str | None = None
    best_q = 0.0
    for coding in ("gzip", "deflate"):
        q = quality.get(coding, wildcard)
        if q > best_q:
            best, best_q = coding, q
    return best


def compress(
    chunks: Sequence[Buffer], accept_encoding: str | None, level: int = 6
) -> tuple[list[Buffer], str | None]:
    """(chunks, Content-Encoding) for a response: one compressed chunk and "gzip" or "deflate"
    when Accept-Encoding allows one, else the chunks themselves, untouched, and None.

    Compression streams the chunks one by one (no joined copy of the body first).
    """
    coding = choose_encoding(accept_encoding)
    if coding is None:
        return list(chunks), None
    stream = zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS if coding == "gzip" else 15)
    parts = [stream.compress(chunk) for chunk in chunks]
    parts.append(stream.flush())
    return [b"".join(parts)], coding
