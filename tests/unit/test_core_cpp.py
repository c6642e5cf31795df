"""The C++ core's own tests (csrc/tests/*_test.cc), compiled and run as plain binaries.

The core (csrc/core/*.cc) is compiled once per session with the C++ compiler setuptools would
use, and linked with each test file into a binary of its own; each binary is then run once per
C++ test (by name), so each reports here on its own. The test names are read from the sources at
collection (compiling then would slow every collection of the suite);
test_list_matches_the_source checks that each binary agrees. The tests that need the fake CUDA
driver find it in $PYSERVER_CUDA_DRIVER (the session's build of tests/fakes/fake_cuda.c).

tools/sanitize.sh builds and runs the same tests under the sanitizers (test_sanitizers.py).
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
TEST_SOURCES = sorted((CSRC / "tests").glob("*_test.cc"))
FLAGS = ["-std=c++17", "-O1", "-pthread", "-Wall", "-Wextra", f"-I{CSRC}"]
COMPILE_TIMEOUT_S = 600
RUN_TIMEOUT_S = 120


def cpp_test_names(source: Path) -> list[str]:
    return re.findall(r"^TEST_CASE\((\w+)\)", source.read_text(), flags=re.MULTILINE)


def cpp_tests() -> list[tuple[str, str]]:
    """(binary, test) for every C++ test, the binary named as its source file."""
    return [(source.stem, name) for source in TEST_SOURCES for name in cpp_test_names(source)]


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
def cpp_binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every test binary by name (scheduler_test, ...)."""
    cxx = find_compiler()
    if cxx is None:
        pytest.skip("no C++ compiler: $CXX, sysconfig CXX, c++ and g++ are all missing")
    out = tmp_path_factory.mktemp("core_cpp")
    core = sorted((CSRC / "core").glob("*.cc"))
    # Two at a time: the machines this runs on may have two cores, shared.
    with ThreadPoolExecutor(max_workers=2) as pool:
        built = list(pool.map(lambda source: compile_one(cxx, source, out), core + TEST_SOURCES))
    errors = [error for _, error in built if error is not None]
    if errors:
        pytest.fail("compiling the C++ tests failed:\n" + "\n".join(errors), pytrace=False)
    core_objects = [str(obj) for obj, _ in built[: len(core)]]
    binaries = {}
    for source, (obj, _) in zip(TEST_SOURCES, built[len(core) :], strict=True):
        binary = out / source.stem
        link = subprocess.run(
            [*cxx, "-pthread", str(obj), *core_objects, "-ldl", "-o", str(binary)],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_S,
        )
        if link.returncode != 0:
            pytest.fail(f"linking {source.name} failed:\n{link.stdout}{link.stderr}", pytrace=False)
        binaries[source.stem] = binary
    return binaries


def run(binary: Path, fake_cuda: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYSERVER_CUDA_DRIVER": str(fake_cuda)}
    try:
        return subprocess.run(
            [str(binary), *args],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired as e:
        partial = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        pytest.fail(f"{binary.name} {' '.join(args)} ran over {RUN_TIMEOUT_S}s:\n{partial}")


@pytest.mark.parametrize("binary", [source.stem for source in TEST_SOURCES])
def test_list_matches_the_source(
    cpp_binaries: dict[str, Path], fake_cuda_library: Path, binary: str
) -> None:
    result = run(cpp_binaries[binary], fake_cuda_library, "--list")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == cpp_test_names(CSRC / "tests" / f"{binary}.cc")


@pytest.mark.parametrize(("binary", "name"), cpp_tests(), ids=[f"{b}::{n}" for b, n in cpp_tests()])
def test_cpp(
    cpp_binaries: dict[str, Path], fake_cuda_library: Path, binary: str, name: str
) -> None:
    result = run(cpp_binaries[binary], fake_cuda_library, name)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{binary} {name} exited {result.returncode}:\n{output}"
    assert f"{name} ... ok" in result.stdout, output
