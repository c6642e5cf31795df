"""Fixtures shared by the core's unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.unit.core_support import Model


@pytest.fixture
def make() -> Iterator[Callable[..., Model]]:
    models: list[Model] = []

    def factory(*args: Any, **kwargs: Any) -> Model:
        model = Model(*args, **kwargs)
        models.append(model)
        return model

    yield factory
    for model in models:
        model.close()
