"""The C++ core's tests under the sanitizers: tools/sanitize.sh, one mode per test.

asan is AddressSanitizer + UndefinedBehaviorSanitizer (+ LeakSanitizer), tsan ThreadSanitizer.
The script builds into build/sanitize/<mode>/ (two compiles at a time, only what changed since
its last run there) and exits non-zero on any failed test or sanitizer report; 77 means the
compiler cannot build or run that sanitizer here, which skips with the script's reason.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "sanitize.sh"
TIMEOUT_S = 1200  # a cold build on two busy cores; an idle machine needs a tenth of it
NO_SANITIZER = 77


@pytest.mark.parametrize("mode", ["asan", "tsan"])
def test_core_tests_are_clean_under_sanitizer(mode: str) -> None:
    if shutil.which("bash") is None:
        pytest.skip("tools/sanitize.sh needs bash")
    result = subprocess.run(
        ["bash", str(SCRIPT), mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    output = result.stdout + result.stderr
    if result.returncode == NO_SANITIZER:
        pytest.skip(f"no {mode} runtime: {result.stderr.strip()}")
    assert result.returncode == 0, f"tools/sanitize.sh {mode} exited {result.returncode}:\n{output}"
    # Every test binary ran and said so (a script that built nothing would also exit 0).
    binaries = sorted(p.stem for p in (ROOT / "csrc" / "tests").glob("*_test.cc"))
    for binary in binaries:
        line = rf"^{mode} {binary}: [1-9][0-9]* tests, 0 failed in [0-9]+ s$"
        assert re.search(line, output, flags=re.MULTILINE), output
    assert f"sanitize.sh: {mode}: clean" in output, output
