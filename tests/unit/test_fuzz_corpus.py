"""The fuzzers' seed corpora, replayed through the harnesses' property functions (without
atheris): every input the fuzzers start from, and every one they found, still passes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fuzz import (
    fuzz_config_pbtxt,
    fuzz_config_toml,
    fuzz_decode,
    fuzz_decompress,
    fuzz_log_settings,
    make_corpus,
)
from pyserver.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
HARNESSES: dict[str, Callable[[bytes], None]] = {
    "decode": fuzz_decode.check_input,
    "decompress": fuzz_decompress.check_input,
    "config_toml": fuzz_config_toml.check_input,
    "config_pbtxt": fuzz_config_pbtxt.check_input,
    "log_settings": fuzz_log_settings.check_input,
}
CASES = [
    pytest.param(harness, path, id=f"{harness}/{path.name}")
    for harness in HARNESSES
    for path in sorted((CORPUS / harness).iterdir())
]


def test_each_harness_has_a_corpus() -> None:
    for harness in HARNESSES:
        assert len(list((CORPUS / harness).iterdir())) >= 10, harness


@pytest.mark.parametrize(("harness", "path"), CASES)
def test_corpus_input_passes(harness: str, path: Path) -> None:
    HARNESSES[harness](path.read_bytes())


def test_replay_needs_no_atheris() -> None:
    assert "atheris" not in sys.modules


def test_the_corpora_stay_small() -> None:
    sizes = {p: p.stat().st_size for p in CORPUS.rglob("*") if p.is_file()}
    assert sum(sizes.values()) < 512 * 1024, sum(sizes.values())
    assert max(sizes.values()) < 96 * 1024, max(sizes, key=sizes.__getitem__)


@pytest.mark.parametrize(
    ("folder", "make"),
    [
        ("decode", make_corpus.decode_seeds),
        ("decompress", make_corpus.decompress_seeds),
        ("config_toml", make_corpus.config_seeds),
        ("log_settings", make_corpus.log_seeds),
    ],
)
def test_the_committed_seeds_are_what_make_corpus_writes(
    folder: str, make: Callable[[], dict[str, bytes]]
) -> None:
    expected = make()
    on_disk = {p.name: p.read_bytes() for p in (CORPUS / folder).iterdir()
               if not p.name.startswith("found-")}
    assert on_disk == expected


def test_the_committed_http_corpus_is_what_make_corpus_writes() -> None:
    expected = {
        f"{name}.http": make_corpus.http_file(status, fragment, method, path, headers, body)
        for name, status, fragment, method, path, headers, body in make_corpus.http_cases()
    }
    on_disk = {p.name: p.read_bytes() for p in (CORPUS / "http").iterdir()
               if not p.name.startswith("found-")}
    assert on_disk == expected


@pytest.mark.parametrize("model", ["add_sub", "identity", "identity_bytes"])
def test_the_harness_signatures_are_the_bundled_models(model: str) -> None:
    # digits declares no tensors in config.toml (they come from its ONNX file): the component
    # test compares it with the server's metadata instead.
    assert load_config(ROOT / "engines" / model).signature() == fuzz_decode.BUNDLED[model]


def test_every_bundled_model_has_a_harness_signature() -> None:
    bundled = {p.parent.name for p in (ROOT / "engines").glob("*/config.toml")}
    assert bundled == set(fuzz_decode.BUNDLED)
