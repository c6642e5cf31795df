"""The monitor's C++ tests (csrc/tests/monitor_test.cc), compiled and run as a plain binary.

Built once per session, as test_core_cpp.py builds the scheduler's tests, but from the few core
files the monitor needs (it has no threads or engines of its own), then run once per C++ test.
"""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.unit.test_core_cpp import COMPILE_TIMEOUT_S, CSRC, compile_one, find_compiler, run

TEST_SOURCE = CSRC / "tests" / "monitor_test.cc"
CORE_SOURCES = ("monitor.cc", "monitor_kernels.cc", "types.cc", "framing.cc")


def monitor_test_names() -> list[str]:
    return re.findall(r"^TEST_CASE\((\w+)\)", TEST_SOURCE.read_text(), flags=re.MULTILINE)


@pytest.fixture(scope="session")
def monitor_test(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cxx = find_compiler()
    if cxx is None:
        pytest.skip("no C++ compiler: $CXX, sysconfig CXX, c++ and g++ are all missing")
    out = tmp_path_factory.mktemp("monitor_cpp")
    sources = [CSRC / "core" / name for name in CORE_SOURCES] + [TEST_SOURCE]
    with ThreadPoolExecutor(max_workers=2) as pool:
        built = list(pool.map(lambda source: compile_one(cxx, source, out), sources))
    errors = [error for _, error in built if error is not None]
    if errors:
        pytest.fail("compiling the monitor's C++ tests failed:\n" + "\n".join(errors),
                    pytrace=False)
    binary = out / "monitor_test"
    link = subprocess.run(
        [*cxx, "-pthread", *(str(obj) for obj, _ in built), "-o", str(binary)],
        capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S,
    )
    if link.returncode != 0:
        pytest.fail(f"linking the monitor's C++ tests failed:\n{link.stdout}{link.stderr}",
                    pytrace=False)
    return binary


def test_list_matches_the_source(monitor_test: Path) -> None:
    result = run(monitor_test, "--list")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == monitor_test_names()


@pytest.mark.parametrize("name", monitor_test_names())
def test_monitor_cpp(monitor_test: Path, name: str) -> None:
    result = run(monitor_test, name)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{monitor_test.name} {name} exited {result.returncode}:\n{output}"
    assert f"{name} ... ok" in result.stdout, output
