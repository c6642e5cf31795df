"""Locust users for any KServe v2 model: binary-tensor infer requests (Triton's binary extension,
as tritonclient and perf_analyzer send them) and a JSON variant, in a chosen mix.

The model, its input shape and datatype and the mix come from options (or environment
variables, which the options default to); the rest is read from the model's metadata once per
user. Any answer but 200 counts as a failure. Headless, for 30 s:

    locust -f benchmarks/locustfile.py --headless -u 16 -r 16 -t 30s \
        --host http://127.0.0.1:8000 --model digits --binary-ratio 0.8

Options: --model (PYSERVER_MODEL, default identity), --batch (PYSERVER_BATCH, rows per request,
default 1), --shape (PYSERVER_SHAPE, dims after the batch dimension for every input, e.g. "64";
default: from metadata, variable dims as 1), --datatype (PYSERVER_DATATYPE, default: from
metadata), --binary-ratio (PYSERVER_BINARY_RATIO, share of binary requests, default 1.0).
Locust shares the CPU with a server on the same machine: on 2 cores it tops out near 3,000
requests/s, so use it for scenarios and benchmarks/sweep.py for throughput figures.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import numpy as np
from locust import FastHttpUser, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment

DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT8": np.int8,
          "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
          "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "BOOL": np.bool_}


@events.init_command_line_parser.add_listener
def _options(parser: LocustArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--model", default=env("PYSERVER_MODEL", "identity"),
                        help="model to call (env PYSERVER_MODEL)")
    parser.add_argument("--batch", type=int, default=int(env("PYSERVER_BATCH", "1")),
                        help="rows per request (env PYSERVER_BATCH)")
    parser.add_argument("--shape", default=env("PYSERVER_SHAPE", ""),
                        help="dims after the batch dimension, comma-separated, for every input "
                        "(env PYSERVER_SHAPE; default from metadata)")
    parser.add_argument("--datatype", default=env("PYSERVER_DATATYPE", ""),
                        help="datatype of every input (env PYSERVER_DATATYPE; default from metadata)")
    parser.add_argument("--binary-ratio", type=float,
                        default=float(env("PYSERVER_BINARY_RATIO", "1.0")),
                        help="share of requests sent as binary tensors, 0..1 (env PYSERVER_BINARY_RATIO)")


def _tensor(spec: dict[str, Any], options: Any, rng: np.random.Generator) -> tuple[dict[str, Any], np.ndarray]:
    datatype = options.datatype or spec["datatype"]
    if options.shape:
        dims = [int(d) for d in options.shape.split(",") if d.strip()]
    else:
        dims = [d if d > 0 else 1 for d in spec["shape"][1:]]
    shape = [options.batch, *dims]
    if datatype == "BYTES":
        data = np.array([b"locust"] * int(np.prod(shape)), dtype=object).reshape(shape)
    else:
        data = (rng.random(shape) * 16).astype(DTYPES[datatype])
    return {"name": spec["name"], "shape": shape, "datatype": datatype}, data


def build_bodies(metadata: dict[str, Any], options: Any) -> tuple[bytes, int, bytes]:
    """(binary body, its JSON header's length, JSON body) for one request to the model."""
    rng = np.random.default_rng(0)
    binary_inputs, json_inputs, tails = [], [], []
    for spec in metadata["inputs"]:
        head, data = _tensor(spec, options, rng)
        if head["datatype"] == "BYTES":
            raw = b"".join(len(x).to_bytes(4, "little") + x for x in data.flat)
            values: list[Any] = [x.decode() for x in data.flat]
        else:
            raw = data.tobytes()
            values = data.flatten().tolist()
        binary_inputs.append({**head, "parameters": {"binary_data_size": len(raw)}})
        json_inputs.append({**head, "data": values})
        tails.append(raw)
    header = json.dumps({"inputs": binary_inputs,
                         "parameters": {"binary_data_output": True}}).encode()
    return header + b"".join(tails), len(header), json.dumps({"inputs": json_inputs}).encode()


class InferUser(FastHttpUser):  # type: ignore[misc]
    """Posts infer requests back to back: binary with probability --binary-ratio, else JSON."""

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.model = options.model
        self.binary_ratio = options.binary_ratio
        with self.client.get(f"/v2/models/{self.model}", name="/v2/models/[model]",
                             catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"metadata: HTTP {response.status_code}")
                raise RuntimeError(f"model {self.model!r}: HTTP {response.status_code}")
            metadata = response.json()
        self.binary, self.header_length, self.json_body = build_bodies(metadata, options)
        self.path = f"/v2/models/{self.model}/infer"

    @task
    def infer(self) -> None:
        if random.random() < self.binary_ratio:
            self._post(self.binary, {"Inference-Header-Content-Length": str(self.header_length),
                                     "Content-Type": "application/octet-stream"}, "binary")
        else:
            self._post(self.json_body, {"Content-Type": "application/json"}, "json")

    def _post(self, body: bytes, headers: dict[str, str], kind: str) -> None:
        with self.client.post(self.path, data=body, headers=headers, catch_response=True,
                              name=f"{self.path} [{kind}]") as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")


@events.test_start.add_listener
def _describe(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None:
        print(f"locust: model {options.model}, batch {options.batch}, "
              f"binary share {options.binary_ratio:.2f}", flush=True)
