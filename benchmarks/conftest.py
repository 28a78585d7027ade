"""Shared setup of the benchmark suite: every engine gets the same thread count."""
import os

import pytest

THREADS = int(os.environ.get("FASTRNN_BENCH_THREADS", "2"))


@pytest.fixture(scope="session", autouse=True)
def _threads():
    import fastrnn

    fastrnn.set_num_threads(THREADS)
    try:
        import torch

        torch.set_num_threads(THREADS)
    except ImportError:
        pass
    yield
