"""Build of fastrnn's C core and its Cython boundary.

Portable by default: no native-arch tuning flags. The AVX2 and AVX-512 kernels carry
their own target pragmas (csrc/kern_avx2.c, csrc/kern_avx512.c) and are
chosen at run time. FASTRNN_SANITIZE=1 builds with ASan+UBSan for CI.
"""
import os
import sys

import numpy as np
from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - build requirement in pyproject.toml
    sys.exit("building fastrnn needs Cython (pip install cython)")

csrc = ["csrc/forward.c", "csrc/dispatch.c", "csrc/team.c", "csrc/quant.c", "csrc/kern_scalar.c", "csrc/kern_avx2.c",
        "csrc/kern_avx512.c"]

cflags = ["-O3", "-std=c11", "-Wall", "-Wextra", "-fno-strict-aliasing"]
lflags = []
if os.environ.get("FASTRNN_SANITIZE"):
    cflags = ["-O1", "-g", "-std=c11", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
              "-fno-sanitize-recover=undefined"]
    lflags = ["-fsanitize=address,undefined"]

ext = Extension(
    "fastrnn._core",
    sources=["fastrnn/_core.pyx"] + csrc,
    include_dirs=["csrc", np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=cflags,
    extra_link_args=lflags,
    depends=["csrc/" + f for f in os.listdir("csrc") if f.endswith(".h")] if os.path.isdir("csrc") else [],
)

# Tree-LSTM core (csrc/tree.c): a separate extension; its products run on the RNN
# core's kernels and threads (frnn_gemm_packed, passed from _core at import).
tree_ext = Extension(
    "fastrnn._tree",
    sources=["fastrnn/_tree.pyx", "csrc/tree.c"],
    include_dirs=["csrc", np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=cflags,
    extra_link_args=lflags,
    depends=["csrc/tree.h"],
)

setup(ext_modules=cythonize([ext, tree_ext], language_level=3, compiler_directives={"embedsignature": True}))
