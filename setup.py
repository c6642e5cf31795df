"""Builds pyserver's two compiled parts: the C++ core (pybind11) and the Cython codec.

Everything else about the package lives in pyproject.toml.
"""

from __future__ import annotations

import glob
import os

from Cython.Build import cythonize
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))

core_sources = sorted(glob.glob("csrc/core/*.cc")) + sorted(glob.glob("csrc/bindings/*.cc"))

core = Pybind11Extension(
    "pyserver._core",
    core_sources,
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
    libraries=["dl", "pthread"],
)

codec = Extension(
    "pyserver.protocol._codec",
    ["pyserver/protocol/_codec.pyx"],
    extra_compile_args=["-O2"],
)

setup(
    ext_modules=[core, *cythonize([codec], language_level=3, quiet=True)],
    cmdclass={"build_ext": build_ext},
)
