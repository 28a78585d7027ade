"""The C core compiles warning-free with -Wall -Wextra (every ISA file)."""
import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
@pytest.mark.parametrize("src", sorted(glob.glob(os.path.join(ROOT, "csrc", "*.c"))), ids=os.path.basename)
def test_c_compiles_without_warnings(src, tmp_path):
    r = subprocess.run(["cc", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fPIC", "-c", src,
                        "-o", str(tmp_path / "x.o")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_no_march_native():
    for f in [os.path.join(ROOT, "setup.py")] + glob.glob(os.path.join(ROOT, "csrc", "*")):
        with open(f) as fh:
            assert "-march=native" not in fh.read(), f
