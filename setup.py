"""Builds pyserver's compiled parts: the C++ core (pybind11) and the Cython codec; and compiles
the gRPC .proto files into a descriptor set (pyserver/grpc/_descriptors.py says why).

Everything else about the package lives in pyproject.toml.
"""

from __future__ import annotations

import glob
import importlib.util
import os

from Cython.Build import cythonize
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import Extension, setup
from setuptools.command.build_py import build_py

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


def build_grpc_descriptors() -> None:
    """pyserver/grpc/protos/*.proto -> descriptors.binpb in the source tree, where both a wheel
    (as package data) and an editable install find it. Loaded by path: pyserver is not
    importable yet."""
    path = os.path.join(HERE, "pyserver", "grpc", "_descriptors.py")
    spec = importlib.util.spec_from_file_location("_pyserver_grpc_descriptors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_descriptor_set()


class BuildPy(build_py):
    def run(self) -> None:
        build_grpc_descriptors()
        super().run()


class BuildExt(build_ext):
    # `python setup.py build_ext --inplace`, the development rebuild, refreshes them too.
    def run(self) -> None:
        build_grpc_descriptors()
        super().run()


setup(
    ext_modules=[core, *cythonize([codec], language_level=3, quiet=True)],
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
)
