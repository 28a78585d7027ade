"""Streaming: stepping through a sequence equals one full call."""
import numpy as np
import pytest


@pytest.mark.parametrize("cls,kw", [("LSTM", {}), ("LSTM", {"proj_size": 3}), ("GRU", {}),
                                    ("GRU", {"linear_before_reset": False}), ("RNN", {"nonlinearity": "relu"})])
@pytest.mark.parametrize("batch_first", [False, True])
def test_steps_equal_full_call(fastrnn, cls, kw, batch_first):
    layer = getattr(fastrnn, cls)(5, 40, num_layers=2, batch_first=batch_first, seed=1, **kw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 5)).astype(np.float32)  # (T, B, I)
    full_out, full_state = layer(x.transpose(1, 0, 2) if batch_first else x)
    state, outs = None, []
    for t in range(6):
        o, state = layer.step(x[t], state)
        outs.append(o)
    steps = np.stack(outs, 1 if batch_first else 0)
    assert np.max(np.abs(steps - full_out)) <= 1e-6
    if cls == "LSTM":
        for a, b in zip(state, full_state):
            assert np.max(np.abs(a - b)) <= 1e-6
    else:
        assert np.max(np.abs(state - full_state)) <= 1e-6


def test_unbatched_step(fastrnn):
    layer = fastrnn.GRU(4, 8, seed=0)
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    h, outs = None, []
    for t in range(5):
        o, h = layer.step(x[t], h)
        assert o.shape == (8,) and h.shape == (1, 8)
        outs.append(o)
    np.testing.assert_allclose(np.stack(outs), layer(x)[0], atol=1e-6)


def test_bidirectional_cannot_stream(fastrnn):
    layer = fastrnn.LSTM(4, 8, bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        layer.step(np.zeros((1, 4), np.float32))


def test_step_bad_input(fastrnn):
    layer = fastrnn.LSTM(4, 8)
    with pytest.raises(ValueError):
        layer.step(np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError):
        layer.step(np.zeros((1, 5), np.float32))
    with pytest.raises(TypeError):
        layer.step(np.zeros((1, 4), np.float32), np.zeros((1, 1, 8), np.float32))
