"""A fresh fake `tensorrt` (tests/fakes/tensorrt) for one test: its own module, so its call log
starts empty, put in sys.modules for the test's duration."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

FAKE = Path(__file__).with_name("tensorrt") / "__init__.py"


def load_fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("tensorrt", FAKE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    spec.loader.exec_module(module)
    return module
