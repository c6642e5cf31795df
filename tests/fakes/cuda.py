"""The fake CUDA driver (fake_cuda.c), built once per test session and swapped into the core.

Device memory under the fake is host memory, so tests (and fake engines) can read and write
what the core copies to "the GPU".
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_cuda.c")


def find_c_compiler() -> list[str] | None:
    for configured in (os.environ.get("CC"), sysconfig.get_config_var("CC")):
        if configured and shutil.which(shlex.split(configured)[0]):
            return shlex.split(configured)
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    return None


def build(out_dir: Path) -> Path:
    cc = find_c_compiler()
    if cc is None:
        raise RuntimeError("no C compiler found to build the fake CUDA driver")
    library = out_dir / "libfake_cuda.so"
    subprocess.run(
        [*cc, "-shared", "-fPIC", "-O1", "-pthread", str(SOURCE), "-o", str(library)],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return library


class FakeCuda:
    """Controls of a loaded fake driver."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The same file the core dlopens: the same loaded library, the same counters.
        self._lib = ctypes.CDLL(str(path))
        self._lib.fake_cuda_counter_names.restype = ctypes.c_char_p
        self._names = self._lib.fake_cuda_counter_names().decode().split(",")

    def counters(self) -> dict[str, int]:
        values = (ctypes.c_longlong * len(self._names))()
        self._lib.fake_cuda_counters(values)
        return dict(zip(self._names, values, strict=True))

    def reset(self, devices: int = 2) -> None:
        self._lib.fake_cuda_reset(ctypes.c_int(devices))

    def fail_next(self, call: str, code: int = 2) -> None:
        """The next `call` (its symbol name) fails with `code` (2: CUDA_ERROR_OUT_OF_MEMORY)."""
        self._lib.fake_cuda_fail_next(call.encode(), ctypes.c_int(code))
