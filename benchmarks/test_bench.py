"""pytest-benchmark suite: fastrnn next to torch on the same weights and inputs.

Run: ``python -m pytest benchmarks/test_bench.py --benchmark-group-by=param:shape``
(2 threads by default; FASTRNN_BENCH_THREADS=N to change). torch is optional:
without it only fastrnn's rows are measured.
"""
import numpy as np
import pytest

import fastrnn

T = 100
SHAPES = [(B, H) for B in (1, 64) for H in (256, 512)]
CELLS = ("lstm", "gru", "rnn")


def _make(cell, H):
    layer = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}[cell](H, H, seed=0)
    return layer


@pytest.mark.parametrize("shape", [f"{c}-B{B}-H{H}" for c in CELLS for B, H in SHAPES])
@pytest.mark.parametrize("engine", ["fastrnn", "torch"])
def test_forward(benchmark, engine, shape):
    cell, b, h = shape.split("-")
    B, H = int(b[1:]), int(h[1:])
    layer = _make(cell, H)
    x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)
    benchmark.group = shape
    if engine == "fastrnn":
        out = benchmark(layer, x)[0]
        assert out.shape == (T, B, H)
        return
    torch = pytest.importorskip("torch")
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell](H, H)
    with torch.no_grad():
        for name, p in mod.named_parameters():
            p.copy_(torch.from_numpy(layer.state_dict()[name]))
    xt = torch.from_numpy(x)

    def run():
        with torch.no_grad():
            return mod(xt)

    out = benchmark(run)[0]
    np.testing.assert_allclose(out.numpy(), layer(x)[0], atol=1e-5)
