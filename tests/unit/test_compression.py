"""Request decompression (bounded) and response compression, against tritonclient."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest
import tritonclient.http as th

from pyserver.errors import InvalidRequest, PayloadTooLarge, Unsupported
from pyserver.protocol import choose_encoding, compress, decode_request, decompress, encode_response
from pyserver.types import DataType
from tests.unit.test_codec import sample, signature, triton_body


def test_decompress_gzip_deflate_raw_and_identity() -> None:
    data = b"hello " * 1000
    assert decompress(gzip.compress(data), "gzip") == data
    assert decompress(gzip.compress(data[:6]) + gzip.compress(data[6:]), "gzip") == data
    assert decompress(zlib.compress(data), "deflate") == data
    raw = zlib.compressobj(wbits=-15)
    assert decompress(raw.compress(data) + raw.flush(), "Deflate") == data
    assert decompress(data, "identity") is data
    assert decompress(data, None) is data
    assert decompress(gzip.compress(zlib.compress(data)), "deflate, gzip") == data


def test_decompress_refuses_unknown_corrupt_truncated_and_bombs() -> None:
    with pytest.raises(Unsupported, match="Content-Encoding 'br' is not supported"):
        decompress(b"x", "br")
    with pytest.raises(InvalidRequest, match="the gzip request body does not decompress"):
        decompress(b"not gzip at all", "gzip")
    with pytest.raises(InvalidRequest, match="the deflate request body is truncated"):
        decompress(zlib.compress(b"abc" * 100)[:-6], "deflate")
    bomb = gzip.compress(b"\0" * (1 << 20))
    with pytest.raises(PayloadTooLarge, match="inflates past the limit of 65536 bytes"):
        decompress(bomb, "gzip", max_size=65536)
    assert len(decompress(bomb, "gzip", max_size=1 << 20)) == 1 << 20
    with pytest.raises(PayloadTooLarge, match="over the limit of 4"):
        decompress(b"12345", None, max_size=4)


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        (None, None),
        ("", None),
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("br", None),
        ("gzip;q=0, deflate", "deflate"),
        ("deflate;q=0.5, gzip;q=0.4", "deflate"),
        ("*", "gzip"),
        ("*;q=0", None),
        ("identity", None),
        ("x-gzip", "gzip"),
        ("gzip;q=0, *", "deflate"),
    ],
)
def test_choose_encoding(accept: str | None, coding: str | None) -> None:
    assert choose_encoding(accept) == coding


def test_compressed_request_and_response_through_tritonclient() -> None:
    sig = signature(DataType.FP32)
    array = sample(DataType.FP32, (1, 5))
    body, header_length = triton_body({"x": array}, True)
    request = decode_request(decompress(gzip.compress(body), "gzip"), header_length, sig)
    chunks, response_length = encode_response(sig, "1", request, [request.inputs[0]])
    for accept in ("gzip", "deflate"):
        packed, coding = compress(chunks, accept)
        assert coding == accept and len(packed) == 1
        result = th.InferenceServerClient.parse_response_body(
            packed[0], header_length=response_length, content_encoding=coding
        )
        np.testing.assert_array_equal(result.as_numpy("y"), array)
    untouched, coding = compress(chunks, "br")
    assert coding is None and all(a is b for a, b in zip(untouched, chunks, strict=True))
