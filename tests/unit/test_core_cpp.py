"""The C++ core's own tests (csrc/tests), compiled and run as a plain binary.

The binary is built once per session from csrc/core/*.cc and csrc/tests/scheduler_test.cc with
the C++ compiler setuptools would use, then run once per C++ test (by name), so each reports
here on its own. The test names are read from the source at collection (compiling then would
slow every collection of the suite); test_list_matches_the_source checks that the binary agrees.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
TEST_SOURCE = CSRC / "tests" / "scheduler_test.cc"
FLAGS = ["-std=c++17", "-O1", "-pthread", "-Wall", "-Wextra", f"-I{CSRC}"]
COMPILE_TIMEOUT_S = 600
RUN_TIMEOUT_S = 120


def cpp_test_names() -> list[str]:
    return re.findall(r"^TEST_CASE\((\w+)\)", TEST_SOURCE.read_text(), flags=re.MULTILINE)


def find_compiler() -> list[str] | None:
    """The C++ compiler as setuptools picks it: $CXX, else the one Python was built with."""
    candidates = []
    for configured in (os.environ.get("CXX"), sysconfig.get_config_var("CXX")):
        if configured:
            candidates.append(shlex.split(configured))
    candidates += [["c++"], ["g++"]]
    for argv in candidates:
        if argv and shutil.which(argv[0]):
            return argv
    return None


def compile_one(cxx: list[str], source: Path, out: Path) -> tuple[Path, str | None]:
    """Compile one file; the error text on failure."""
    obj = out / (source.parent.name + "_" + source.stem + ".o")
    result = subprocess.run(
        [*cxx, *FLAGS, "-c", str(source), "-o", str(obj)],
        capture_output=True,
        text=True,
        timeout=COMPILE_TIMEOUT_S,
    )
    if result.returncode != 0:
        return obj, f"{source.relative_to(ROOT)}:\n{result.stdout}{result.stderr}"
    return obj, None


@pytest.fixture(scope="session")
def scheduler_test(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cxx = find_compiler()
    if cxx is None:
        pytest.skip("no C++ compiler: $CXX, sysconfig CXX, c++ and g++ are all missing")
    out = tmp_path_factory.mktemp("core_cpp")
    sources = sorted((CSRC / "core").glob("*.cc")) + [TEST_SOURCE]
    # Two at a time: the machines this runs on may have two cores, shared.
    with ThreadPoolExecutor(max_workers=2) as pool:
        built = list(pool.map(lambda source: compile_one(cxx, source, out), sources))
    errors = [error for _, error in built if error is not None]
    if errors:
        pytest.fail("compiling the C++ tests failed:\n" + "\n".join(errors), pytrace=False)
    binary = out / "scheduler_test"
    link = subprocess.run(
        [*cxx, "-pthread", *(str(obj) for obj, _ in built), "-o", str(binary)],
        capture_output=True,
        text=True,
        timeout=COMPILE_TIMEOUT_S,
    )
    if link.returncode != 0:
        pytest.fail(f"linking the C++ tests failed:\n{link.stdout}{link.stderr}", pytrace=False)
    return binary


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(binary), *args],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as e:
        partial = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        pytest.fail(f"{binary.name} {' '.join(args)} ran over {RUN_TIMEOUT_S}s:\n{partial}")


def test_list_matches_the_source(scheduler_test: Path) -> None:
    result = run(scheduler_test, "--list")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == cpp_test_names()


@pytest.mark.parametrize("name", cpp_test_names())
def test_cpp(scheduler_test: Path, name: str) -> None:
    result = run(scheduler_test, name)
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"{scheduler_test.name} {name} exited {result.returncode}:\n{output}"
    )
    assert f"{name} ... ok" in result.stdout, output
