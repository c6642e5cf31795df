"""Runs a harness's property function under atheris (imported here, never by the tests)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run(check_input: Callable[[bytes], None]) -> None:
    """Instrument every Python module loaded so far (pyserver, and the standard library parts
    it calls into, such as tomllib) for coverage, then hand control to libFuzzer with this
    process's arguments (corpus folders, -runs=N / -atheris_runs=N, -max_len=...)."""
    import atheris

    atheris.instrument_all()
    atheris.Setup(sys.argv, check_input)
    atheris.Fuzz()
