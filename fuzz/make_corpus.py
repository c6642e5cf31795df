"""Write the seed corpora under fuzz/corpus/ (run from the repository root):

    python -m fuzz.make_corpus

decode/, decompress/, config_toml/, log_settings/: one small file per seed, in each harness's
input layout (valid and near-valid inputs for the bundled models' signatures and the synthetic
ones). http/: the malformed-request corpus that tests/component/test_malformed_corpus.py sends
to a real server (format in fuzz/README.md). The files are committed; this script documents
how the hand-made ones were made and rewrites them (the fuzzers' own finds, named `found-*`,
are kept as they are).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import orjson

from fuzz import fuzz_decode as fd
from fuzz import fuzz_decompress as fz
from fuzz.v2_requests import request

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
ENGINES = HERE.parent / "engines"


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)  # no timestamp: the same bytes on every run


def deep(levels: int, inner: str = "") -> str:
    return "[" * levels + inner + "]" * levels


# --------------------------------------------------------------------------------------------
# decode

def decode_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for signature in fd.SIGNATURES:
        name = signature.name
        body, header = request(signature)
        seeds[f"{name}-json"] = fd.pack(name, body, header)
        body, header = request(signature, binary=True, batch=2 if signature.max_batch_size else 1)
        seeds[f"{name}-binary"] = fd.pack(name, body, header)
        outputs = [{"name": o.name, "parameters": {"binary_data": i % 2 == 0}}
                   for i, o in enumerate(signature.outputs)]
        body, header = request(signature, binary=True, outputs=outputs, request_id="r1",
                               parameters={"priority": 1, "timeout": 1000})
        seeds[f"{name}-outputs"] = fd.pack(name, body, header)
        body, header = request(signature, parameters={"binary_data_output": True})
        seeds[f"{name}-binary-output"] = fd.pack(name, body, header)

    def identity(data: str, shape: str = "[1,16]", datatype: str = "FP32") -> bytes:
        text = (f'{{"inputs":[{{"name":"INPUT0","shape":{shape},"datatype":"{datatype}",'
                f'"data":{data}}}]}}')
        return text.encode()

    sixteen = "[" + ",".join(["1"] * 16) + "]"
    seeds["identity-fp32-overflow"] = fd.pack("identity", identity(sixteen.replace("1", "1e39", 1)), None)
    seeds["identity-int-overflow"] = fd.pack("identity", identity(sixteen.replace("1", str(2**64 - 1), 1)), None)
    seeds["identity-nested"] = fd.pack("identity", identity("[" + sixteen + "]"), None)
    seeds["identity-deep"] = fd.pack("identity", identity(deep(100, "1")), None)
    seeds["identity-bool-mix"] = fd.pack("identity", identity(sixteen.replace("1", "true", 1)), None)
    seeds["identity_bytes-deep"] = fd.pack(
        "identity_bytes", identity(deep(1000, '"x"'), "[1,1]", "BYTES"), None)
    seeds["identity_bytes-nested"] = fd.pack(
        "identity_bytes", identity('[["x"]]', "[1,1]", "BYTES"), None)
    seeds["identity-deep-parameters"] = fd.pack(
        "identity", b'{"parameters":{"priority":' + deep(300).encode() + b'},"inputs":[]}', None)
    seeds["identity-deep-shape"] = fd.pack(
        "identity", identity("[1]", "[1," + deep(300) + "]"), None)
    body, header = request(fd.BUNDLED["identity"], binary=True)
    assert header is not None
    seeds["identity-header-off-by-one"] = fd.pack("identity", body, header + 1)
    seeds["identity-header-text"] = fd.pack("identity", body, f" {header} ")
    seeds["identity-header-negative"] = fd.pack("identity", body, "-1")
    seeds["identity-truncated-tail"] = fd.pack("identity", body[:-3], header)
    body, header = request(fd.BUNDLED["identity_bytes"], binary=True)
    assert header is not None
    seeds["identity_bytes-bad-framing"] = fd.pack(
        "identity_bytes", body[:header] + b"\xff\xff\xff\xff" + body[header + 4:], header)
    # finding: a dimension past 64 bits made the compiled shape check multiply without checking
    # the dimensions after it, so [1, 2**63, 0] fitted dims [-1, 3] (and [] had its 0 elements)
    seeds["mixed_dims-shape-overflow"] = fd.pack(
        "mixed_dims",
        b'{"inputs":[{"name":"x","shape":[1,9223372036854775808,0],"datatype":"FP32","data":[]}]}',
        None)
    seeds["strings-shape-overflow-float"] = fd.pack(
        "strings",
        b'{"inputs":[{"name":"s","shape":[9223372036854775808,2.0],"datatype":"BYTES","data":[]},'
        b'{"name":"t","shape":[2],"datatype":"BYTES","data":["a","b"]}]}',
        None)
    return seeds


# --------------------------------------------------------------------------------------------
# decompress

def decompress_seeds() -> dict[str, bytes]:
    body, _ = request(fd.BUNDLED["identity"])
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    raw_deflate = raw.compress(body) + raw.flush()
    bomb = gz(b"\0" * 200_000)
    seeds = {
        "gzip": fz.pack_decompress(gz(body), "gzip", 4096),
        "gzip-two-members": fz.pack_decompress(
            gz(body[:50]) + gz(body[50:]), "gzip", 4096),
        "gzip-truncated": fz.pack_decompress(gz(body)[:-6], "gzip", 4096),
        "gzip-over-limit": fz.pack_decompress(gz(body), "gzip", 100),
        "gzip-bomb": fz.pack_decompress(bomb, "gzip", 65536),
        "x-gzip": fz.pack_decompress(gz(b"abc"), "x-gzip", 16),
        "deflate-zlib": fz.pack_decompress(zlib.compress(body), "deflate", 4096),
        "deflate-raw": fz.pack_decompress(raw_deflate, "deflate", 4096),
        "deflate-corrupt": fz.pack_decompress(zlib.compress(body)[:10] + b"junk", "deflate", 4096),
        "deflate-then-gzip": fz.pack_decompress(
            gz(zlib.compress(body)), "deflate, gzip", 4096),
        "identity": fz.pack_decompress(body, "identity", 4096),
        "none-over-limit": fz.pack_decompress(body, None, 16),
        "unsupported": fz.pack_decompress(b"xyz", "br", 4096),
        "raw-coding": bytes([len(fz.CODINGS) - 1, 3, 8]) + b"GZip ,  " + gz(b"hi"),
    }
    for i, accept in enumerate(["gzip", "deflate;q=0.5, gzip;q=0", "*", "identity",
                                "gzip;q=nan, deflate", "br, *;q=0.1", "x-gzip;q=0.9,deflate;q=1"]):
        seeds[f"compress-{i}"] = fz.pack_compress((body[:40], body[40:]), accept)
    return seeds


# --------------------------------------------------------------------------------------------
# config.toml

FULL_CONFIG = """\
platform = "tensorrt_plan"
max_batch_size = 32
default_model_filename = "model.plan"
[[inputs]]
name = "images"
datatype = "FP16"
dims = [3, -1, -1]
[[outputs]]
name = "scores"
datatype = "float32"
dims = [1000]
[dynamic_batching]
preferred_batch_size = [8, 32]
max_queue_delay_microseconds = 500
preserve_ordering = true
priority_levels = 3
default_priority_level = 2
latency_target_microseconds = 5000
[dynamic_batching.default_queue_policy]
max_queue_size = 16
[dynamic_batching.priority_queue_policy.1]
timeout_action = "DELAY"
default_timeout_microseconds = 2000
allow_timeout_override = true
[[instance_group]]
kind = "KIND_GPU"
count = 2
gpus = [0, 1]
[version_policy]
specific = { versions = [2, 1] }
[parameters]
fp16 = true
workspace_mb = 512
ratio = 0.5
"""


def config_seeds() -> dict[str, bytes]:
    seeds = {f"engines-{d.name}": (d / "config.toml").read_bytes()
             for d in sorted(ENGINES.iterdir()) if (d / "config.toml").is_file()}
    seeds["full"] = FULL_CONFIG.encode()
    seeds["latest"] = b'backend = "identity"\n[version_policy]\nlatest = { num_versions = 2 }\n'
    seeds["all"] = b'backend = "pytorch"\nmax_batch_size = 0\n[version_policy]\nall = {}\n'
    seeds["typo"] = b'backend = "onnxruntime"\nmax_batch_sise = 8\n'
    seeds["wrong-type"] = b'backend = "onnxruntime"\nmax_batch_size = "8"\n'
    seeds["bad-toml"] = b'backend = "onnxruntime\n'
    seeds["deep"] = f"backend = 'identity'\nmax_batch_size = {deep(1000)}\n".encode()
    return seeds


# --------------------------------------------------------------------------------------------
# log settings

def log_seeds() -> dict[str, bytes]:
    bodies: dict[str, Any] = {
        "empty": {},
        "info-off": {"log_info": False, "log_warnings": True, "log_errors": True},
        "json": {"log_format": "json"},
        "iso8601": {"log_format": "ISO8601", "log_verbose_level": 1},
        "file": {"log_file": "server.log", "log_format": "default"},
        "console": {"log_file": ""},
        "warnings-off": {"log_warnings": False},
        "bad-bool": {"log_info": "yes"},
        "bad-level": {"log_verbose_level": -1},
        "unknown": {"log_colour": True},
        "not-object": [1],
    }
    seeds = {name: orjson.dumps(body) for name, body in bodies.items()}
    seeds["deep"] = ('{"log_file":' + deep(1000) + "}").encode()
    seeds["nul-path"] = b'{"log_file": "a\\u0000b"}'
    # structured inputs (fuzz_log_settings._structured): [key][kind][length][payload]...
    seeds["structured-level"] = bytes([0xFF, 4, 1, 4]) + (2**32 - 1).to_bytes(4, "little")
    seeds["structured-file"] = bytes([0xFF, 0, 2, 5]) + b"x.log" + bytes([5, 7, 1, 1])
    seeds["structured-deep"] = bytes([0xFF, 1, 5, 1, 200])
    return seeds


# --------------------------------------------------------------------------------------------
# http: the malformed-request corpus (every case answers 4xx; 501 only where named unsupported-)

def http_cases() -> list[tuple[str, int, str, str, str, dict[str, str], bytes]]:
    """(file name, expected status, fragment of the error message, method, path, headers, body)"""
    identity = "/v2/models/identity/infer"
    strings = "/v2/models/identity_bytes/infer"
    add_sub = "/v2/models/add_sub/infer"
    digits = "/v2/models/digits/infer"
    sixteen = [1.0] * 16

    def js(doc: Any) -> bytes:
        return orjson.dumps(doc)

    def one(data: Any = sixteen, shape: Any = (1, 16), datatype: str = "FP32", **extra: Any) -> bytes:
        item = {"name": "INPUT0", "shape": list(shape) if isinstance(shape, tuple) else shape,
                "datatype": datatype, "data": data, **extra}
        return js({"inputs": [item]})

    def raw_one(data: str, shape: str = "[1,16]", datatype: str = "FP32") -> bytes:
        return (f'{{"inputs":[{{"name":"INPUT0","shape":{shape},"datatype":"{datatype}",'
                f'"data":{data}}}]}}').encode()

    binary, hlen = request(fd.BUNDLED["identity"], binary=True)
    assert hlen is not None
    h = {"Inference-Header-Content-Length": str(hlen)}
    bbody, bhlen = request(fd.BUNDLED["identity_bytes"], binary=True)
    assert bhlen is not None
    bh = {"Inference-Header-Content-Length": str(bhlen)}
    good_json = one()

    def edited(body: bytes, length: int, old: bytes, new: bytes) -> tuple[dict[str, str], bytes]:
        """A binary request with its JSON header edited (and its length header to match)."""
        header = body[:length].replace(old, new)
        assert header != body[:length]
        return {"Inference-Header-Content-Length": str(len(header))}, header + body[length:]
    bomb = gz(b"\0" * (64 * 1024 * 1024 + 1))
    ones = ",".join(["1"] * 16)
    cases: list[tuple[str, int, str, str, str, dict[str, str], bytes]] = [
        # bad JSON
        ("json-garbage", 400, "JSON", "POST", identity, {}, b"{not json"),
        ("json-empty-body", 400, "JSON", "POST", identity, {}, b""),
        ("json-array", 400, "must be an object", "POST", identity, {}, b"[]"),
        ("json-null", 400, "must be an object", "POST", identity, {}, b"null"),
        ("json-inputs-object", 400, "'inputs' list", "POST", identity, {}, b'{"inputs": {}}'),
        ("json-invalid-utf8", 400, "JSON", "POST", identity, {}, b'{"inputs": "\xff\xfe"}'),
        ("json-nan-token", 400, "JSON", "POST", identity, {}, raw_one("[NaN" + ",1" * 15 + "]")),
        ("json-infinity-token", 400, "JSON", "POST", identity, {}, raw_one("[Infinity" + ",1" * 15 + "]")),
        ("json-trailing-garbage", 400, "JSON", "POST", identity, {}, good_json + b"}"),
        ("json-id-number", 400, "'id' must be a string", "POST", identity, {},
         js({"id": 7, "inputs": []})),
        ("json-parameters-array", 400, "'parameters' must be an object", "POST", identity, {},
         js({"parameters": [], "inputs": []})),
        ("json-priority-negative", 400, "priority", "POST", identity, {},
         js({"parameters": {"priority": -1}, "inputs": []})),
        ("json-binary-output-string", 400, "binary_data_output", "POST", identity, {},
         js({"parameters": {"binary_data_output": "yes"}, "inputs": []})),
        # inputs
        ("input-missing", 400, "INPUT0", "POST", identity, {}, b'{"inputs": []}'),
        ("input-unknown", 400, "BOGUS", "POST", identity, {},
         js({"inputs": [{"name": "BOGUS", "shape": [1, 16], "datatype": "FP32", "data": sixteen}]})),
        ("input-twice", 400, "more than once", "POST", identity, {},
         js({"inputs": [orjson.loads(good_json)["inputs"][0]] * 2})),
        ("input-not-object", 400, "inputs[0]", "POST", identity, {}, b'{"inputs": [3]}'),
        ("input-no-name", 400, "name", "POST", identity, {}, b'{"inputs": [{}]}'),
        ("input-add_sub-one-missing", 400, "INPUT1", "POST", add_sub, {}, good_json),
        ("input-data-and-binary", 400, "both", "POST", identity, {},
         one(parameters={"binary_data_size": 64})),
        ("input-no-data", 400, "neither", "POST", identity, {},
         js({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32"}]})),
        ("input-data-not-list", 400, "must be a list", "POST", identity, {}, one(data="abc")),
        # shapes
        ("shape-rank", 400, "rank", "POST", identity, {}, one(shape=(16,))),
        ("shape-batch-zero", 400, "batch size 0", "POST", identity, {}, one(data=[], shape=(0, 16))),
        ("shape-batch-over-max", 400, "256", "POST", identity, {}, one(shape=(1000, 16))),
        ("shape-negative", 400, "non-negative", "POST", identity, {}, one(shape=(1, -16))),
        ("shape-float", 400, "non-negative integers", "POST", identity, {}, one(shape=[1, 16.0])),
        ("shape-huge", 400, "shape", "POST", identity, {}, one(shape=[1, 10**18])),
        ("shape-string", 400, "'shape' list", "POST", identity, {}, one(shape="1,16")),
        ("shape-count-mismatch", 400, "16", "POST", identity, {}, one(data=[1.0, 2.0])),
        ("shape-ragged", 400, "regular", "POST", identity, {}, one(data=[[1.0] * 16, [1.0]], shape=(2, 16))),
        ("shape-digits-wrong-dim", 400, "64", "POST", digits, {},
         js({"inputs": [{"name": "pixels", "shape": [1, 16], "datatype": "FP32", "data": sixteen}]})),
        # datatypes
        ("datatype-int32", 400, "datatype", "POST", identity, {}, one(datatype="INT32")),
        ("datatype-lowercase", 400, "datatype", "POST", identity, {}, one(datatype="fp32")),
        ("datatype-not-string", 400, "datatype", "POST", identity, {}, one(datatype=11)),  # type: ignore[arg-type]
        ("datatype-strings-in-fp32", 400, "numbers", "POST", identity, {}, one(data=["1"] * 16)),
        ("datatype-null-in-fp32", 400, "numbers", "POST", identity, {}, one(data=[None] * 16)),
        ("datatype-numbers-in-bytes", 400, "BYTES", "POST", strings, {},
         one(data=[1], shape=(1, 1), datatype="BYTES")),
        ("datatype-bools-in-fp32", 400, "numbers", "POST", identity, {}, one(data=[True] * 16)),
        # huge numbers (the first two were accepted and came back as null)
        ("number-fp32-overflow", 400, "out of range for FP32", "POST", identity, {},
         raw_one("[1e39," + ones[2:] + "]")),
        ("number-fp32-overflow-negative", 400, "out of range for FP32", "POST", identity, {},
         raw_one("[-3.5e38," + ones[2:] + "]")),
        ("number-int-overflow-fp32", 400, "out of range for FP32", "POST", identity, {},
         raw_one("[" + "9" * 39 + "," + ones[2:] + "]")),
        ("number-double-overflow", 400, "JSON", "POST", identity, {}, raw_one("[1e400," + ones[2:] + "]")),
        # (2**64 - 1 is a valid priority and timeout: the core clamps them; 2**64 is no integer)
        ("number-priority-huge", 400, "priority", "POST", identity, {},
         good_json[:-1] + b',"parameters":{"priority":18446744073709551616}}'),
        ("number-timeout-huge", 400, "timeout", "POST", identity, {},
         good_json[:-1] + b',"parameters":{"timeout":18446744073709551616}}'),
        ("number-timeout-float", 400, "timeout", "POST", identity, {},
         good_json[:-1] + b',"parameters":{"timeout":1.5}}'),
        ("number-binary-size-huge", 400, "binary_data_size", "POST", identity,
         *edited(binary, hlen, b'"binary_data_size":64', b'"binary_data_size":18446744073709551615')),
        ("number-binary-size-over-u64", 400, "binary_data_size", "POST", identity,
         *edited(binary, hlen, b'"binary_data_size":64', b'"binary_data_size":18446744073709551616')),
        # deep nesting (the first was a 500: RecursionError)
        ("deep-bytes-data", 400, "nested more than 32 levels", "POST", strings, {},
         raw_one(deep(1000, '"x"'), "[1,1]", "BYTES")),
        ("deep-fp32-data", 400, "nested more than 32 levels", "POST", identity, {},
         raw_one(deep(1000, "1"))),
        ("deep-parameters", 400, "priority", "POST", identity, {},
         b'{"parameters":{"priority":' + deep(1000).encode() + b'},"inputs":[]}'),
        ("deep-shape", 400, "shape", "POST", identity, {}, raw_one("[1]", "[1," + deep(1000) + "]")),
        ("deep-binary-size", 400, "binary_data_size", "POST", identity, {},
         b'{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"FP32","parameters":'
         b'{"binary_data_size":' + deep(1000).encode() + b"}}]}"),
        ("deep-output-parameters", 400, "binary_data", "POST", identity, {},
         good_json[:-1] + b',"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":'
         + deep(1000).encode() + b"}}]}"),
        ("deep-beyond-json-limit", 400, "JSON", "POST", identity, {}, raw_one(deep(5000, "1"))),
        # binary data and header lengths
        ("binary-no-header", 400, "JSON", "POST", identity, {}, binary),
        ("binary-truncated", 400, "binary", "POST", identity, h, binary[:-1]),
        ("binary-extra-bytes", 400, "left over", "POST", identity, h, binary + b"!"),
        ("binary-size-not-multiple", 400, "binary_data_size", "POST", identity,
         *edited(binary[:-1], hlen, b'"binary_data_size":64', b'"binary_data_size":63')),
        ("binary-bytes-framing", 400, "declares", "POST", strings, bh,
         bbody[:bhlen] + b"\xff\xff\xff\x7f" + bbody[bhlen + 4:]),
        ("binary-bytes-truncated-prefix", 400, "truncated length prefix", "POST", strings,
         *edited(bbody[:bhlen] + b"\x01\x00", bhlen, b'"binary_data_size":6', b'"binary_data_size":2')),
        ("header-length-text", 400, "Inference-Header-Content-Length", "POST", identity,
         {"Inference-Header-Content-Length": "abc"}, binary),
        ("header-length-negative", 400, "Inference-Header-Content-Length", "POST", identity,
         {"Inference-Header-Content-Length": "-1"}, binary),
        ("header-length-exponent", 400, "Inference-Header-Content-Length", "POST", identity,
         {"Inference-Header-Content-Length": "1e3"}, binary),
        ("header-length-past-body", 400, "999999", "POST", identity,
         {"Inference-Header-Content-Length": "999999"}, binary),
        ("header-length-zero", 400, "JSON", "POST", identity,
         {"Inference-Header-Content-Length": "0"}, binary),
        ("header-length-huge", 400, "Inference-Header-Content-Length", "POST", identity,
         {"Inference-Header-Content-Length": "9" * 40}, binary),
        ("header-length-superscript", 400, "Inference-Header-Content-Length", "POST", identity,
         {"Inference-Header-Content-Length": "\u00b2"}, binary),  # str.isdigit() says yes
        ("header-length-plus", 400, "Inference-Header-Content-Length", "POST", identity,
         {"Inference-Header-Content-Length": f"+{hlen}"}, binary),
        ("header-length-off-by-one", 400, "JSON", "POST", identity,
         {"Inference-Header-Content-Length": str(hlen + 1)}, binary),
        # compression
        ("gzip-garbage", 400, "gzip", "POST", identity, {"Content-Encoding": "gzip"}, b"not gzip"),
        ("gzip-truncated", 400, "truncated", "POST", identity, {"Content-Encoding": "gzip"},
         gz(good_json)[:-10]),
        ("gzip-of-bad-json", 400, "JSON", "POST", identity, {"Content-Encoding": "gzip"},
         gz(b"{not json")),
        ("gzip-trailing-junk", 400, "gzip", "POST", identity, {"Content-Encoding": "gzip"},
         gz(good_json) + b"junk"),
        ("deflate-garbage", 400, "deflate", "POST", identity, {"Content-Encoding": "deflate"},
         b"\x78\x9c garbage"),
        ("gzip-bomb", 413, "limit", "POST", identity, {"Content-Encoding": "gzip"}, bomb),
        ("unsupported-content-encoding", 501, "br", "POST", identity, {"Content-Encoding": "br"},
         good_json),
        ("unsupported-content-encoding-list", 501, "zstd", "POST", identity,
         {"Content-Encoding": "gzip, zstd"}, good_json),
        # outputs
        ("output-unknown", 400, "NOPE", "POST", identity, {},
         good_json[:-1] + b',"outputs":[{"name":"NOPE"}]}'),
        ("output-twice", 400, "more than once", "POST", identity, {},
         good_json[:-1] + b',"outputs":[{"name":"OUTPUT0"},{"name":"OUTPUT0"}]}'),
        ("output-binary-string", 400, "binary_data", "POST", identity, {},
         good_json[:-1] + b',"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":1}}]}'),
        ("output-bytes-not-utf8", 400, "UTF-8", "POST", strings, bh,
         bbody[:bhlen] + b"\x02\x00\x00\x00\xff\xfe"),
        ("unsupported-shared-memory", 501, "shared memory", "POST", identity, {},
         js({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                         "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 64}}]})),
        ("unsupported-classification", 501, "classification", "POST", identity, {},
         good_json[:-1] + b',"outputs":[{"name":"OUTPUT0","parameters":{"classification":2}}]}'),
        # routing
        ("model-unknown", 404, "nope", "POST", "/v2/models/nope/infer", {}, good_json),
        ("model-version-unknown", 404, "7", "POST", "/v2/models/identity/versions/7/infer", {}, good_json),
        ("model-version-huge", 404, "9" * 30, "POST",
         "/v2/models/identity/versions/" + "9" * 30 + "/infer", {}, good_json),
        ("model-version-text", 404, "no such endpoint", "POST", "/v2/models/identity/versions/abc/infer", {}, good_json),
        ("method-get-infer", 405, "GET", "GET", identity, {}, b""),
        # logging settings (the deep one was a 500: RecursionError in repr)
        ("logging-deep", 400, "log_file", "POST", "/v2/logging", {},
         b'{"log_file":' + deep(1000).encode() + b"}"),
        ("logging-nul-path", 400, "log_file", "POST", "/v2/logging", {}, b'{"log_file":"a\\u0000b"}'),
        ("logging-not-json", 400, "JSON", "POST", "/v2/logging", {}, b"{"),
        ("logging-unknown", 400, "unknown log setting", "POST", "/v2/logging", {},
         b'{"' + b"x" * 5000 + b'": 1}'),
    ]
    return cases


def http_file(status: int, fragment: str, method: str, path: str, headers: dict[str, str],
              body: bytes) -> bytes:
    head = [f"# expect {status} {fragment}".rstrip(), f"{method} {path}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\n".join(head) + "\n\n").encode("latin-1") + body


def write(folder: Path, seeds: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if not old.name.startswith("found-"):
            old.unlink()
    for name, data in seeds.items():
        (folder / name).write_bytes(data)


def main() -> None:
    write(CORPUS / "decode", decode_seeds())
    write(CORPUS / "decompress", decompress_seeds())
    write(CORPUS / "config_toml", config_seeds())
    write(CORPUS / "log_settings", log_seeds())
    write(CORPUS / "http", {
        f"{name}.http": http_file(status, fragment, method, path, headers, body)
        for name, status, fragment, method, path, headers, body in http_cases()
    })


if __name__ == "__main__":
    main()
