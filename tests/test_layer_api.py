"""Layer objects: pickling, config round trips, repr, immutability of returned parameters."""
import pickle

import numpy as np
import pytest


@pytest.mark.parametrize("cls,kw", [("LSTM", {"proj_size": 4}), ("GRU", {"linear_before_reset": False}),
                                    ("RNN", {"nonlinearity": "relu"})])
def test_pickle_and_config_round_trip(fastrnn, cls, kw):
    layer = getattr(fastrnn, cls)(6, 9, num_layers=2, bidirectional=True, seed=3, **kw)
    x = np.random.default_rng(0).standard_normal((7, 2, 6)).astype(np.float32)
    ref = layer(x)[0]
    again = pickle.loads(pickle.dumps(layer))
    np.testing.assert_array_equal(again(x)[0], ref)
    rebuilt = fastrnn.layer_from_config(layer.config(), state_dict=layer.state_dict())
    np.testing.assert_array_equal(rebuilt(x)[0], ref)
    assert repr(layer).startswith(f"{cls}(6, 9, num_layers=2")


def test_state_dict_is_a_copy(fastrnn):
    layer = fastrnn.GRU(3, 5, seed=0)
    x = np.ones((4, 1, 3), np.float32)
    before = layer(x)[0]
    sd = layer.state_dict()
    sd["weight_hh_l0"][:] = 100.0
    np.testing.assert_array_equal(layer(x)[0], before)


def test_seed_reproducible_and_torch_like_range(fastrnn):
    a = fastrnn.LSTM(4, 25, seed=5).state_dict()
    b = fastrnn.LSTM(4, 25, seed=5).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert np.abs(a[k]).max() <= 1 / np.sqrt(25)


def test_parameters_as_attributes(fastrnn):
    """layer.weight_hh_l0 reads the array the kernels use (read-only); assigning one loads it
    (checked and repacked, requantized for a quantized layer), as torch users expect; an
    assignment was silently kept apart from the weights before."""
    layer = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, seed=0)
    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(layer.weight_hh_l1_reverse, layer.state_dict()["weight_hh_l1_reverse"])
    assert not layer.weight_ih_l0.flags.writeable
    new = layer.weight_ih_l0 * 0.5
    layer.weight_ih_l0 = new
    np.testing.assert_array_equal(layer.state_dict()["weight_ih_l0"], new)
    np.testing.assert_array_equal(layer(x)[0], fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True).load_state_dict(
        layer.state_dict())(x)[0])
    with pytest.raises(ValueError, match="size mismatch for weight_ih_l0"):
        layer.weight_ih_l0 = np.zeros((3, 3))
    np.testing.assert_array_equal(layer.weight_ih_l0, new)   # a refused assignment changes nothing
    q = layer.quantize("bf16")
    q.bias_hh_l0 = np.ones(20, np.float32)
    assert q.dtype == "bf16" and q.bias_hh_l0.max() == 1.0
    with pytest.raises(AttributeError, match="weight_hr_l0"):
        layer.weight_hr_l0   # no projection
    layer.num_threads = 1    # other attributes as before
    assert layer.num_threads == 1 and layer._net.num_threads == 1


def test_load_state_dict_not_strict(fastrnn):
    """strict=False as in torch: unexpected entries ignored, missing ones kept, shapes still
    checked; for layers, whole models and Tree-LSTMs (it was refused outright)."""
    from fastrnn.models import Embedding, Linear, Sequential
    layer = fastrnn.GRU(3, 4, seed=0)
    other = fastrnn.GRU(3, 4, seed=1).state_dict()
    before = layer.state_dict()
    layer.load_state_dict({"weight_hh_l0": other["weight_hh_l0"], "extra.thing": np.zeros(2)}, strict=False)
    after = layer.state_dict()
    np.testing.assert_array_equal(after["weight_hh_l0"], other["weight_hh_l0"])
    for k in before:
        if k != "weight_hh_l0":
            np.testing.assert_array_equal(after[k], before[k])
    with pytest.raises(ValueError, match="size mismatch"):
        layer.load_state_dict({"weight_hh_l0": np.zeros((3, 3))}, strict=False)
    with pytest.raises(ValueError, match="missing"):
        layer.load_state_dict({"weight_hh_l0": other["weight_hh_l0"]})
    model = Sequential(Embedding(5, 3, seed=0), fastrnn.LSTM(3, 4, seed=0), Linear(4, 2, seed=0))
    sd = model.state_dict()
    model.load_state_dict({"2.bias": np.ones(2, np.float32), "9.x": np.zeros(1)}, strict=False)
    np.testing.assert_array_equal(model.state_dict()["2.bias"], np.ones(2))
    np.testing.assert_array_equal(model.state_dict()["1.weight_ih_l0"], sd["1.weight_ih_l0"])
    tree = fastrnn.ChildSumTreeLSTM(3, 4, seed=0)
    tsd = tree.state_dict()
    k = next(iter(tsd))
    tree.load_state_dict({k: tsd[k] * 2}, strict=False)
    np.testing.assert_array_equal(tree.state_dict()[k], tsd[k] * 2)


def test_torch_module_habits(fastrnn):
    """What torch code calls on a model at inference works: eval(), train(False), forward(),
    cpu(), named_parameters() / parameters() in state_dict order, RNN flatten_parameters();
    train(True) is refused (fastrnn does not train)."""
    from fastrnn.models import Linear, Sequential
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    for m in (fastrnn.LSTM(3, 5, seed=0), Sequential(fastrnn.GRU(3, 5, seed=0), Linear(5, 2, seed=0)),
              Linear(3, 2, seed=0)):
        assert m.eval() is m and m.train(False) is m and m.cpu() is m and m.training is False
        np.testing.assert_array_equal(m.forward(x)[0], m(x)[0])
        sd = m.state_dict()
        assert [k for k, _ in m.named_parameters()] == list(sd)
        for a, b in zip(m.parameters(), sd.values()):
            np.testing.assert_array_equal(a, b)
        with pytest.raises(ValueError, match="inference only"):
            m.train()
    tree = fastrnn.ChildSumTreeLSTM(3, 4, seed=0).eval()
    np.testing.assert_array_equal(tree.forward(x[0], [-1, 0])[0], tree(x[0], [-1, 0])[0])
    assert fastrnn.GRU(3, 5).flatten_parameters() is None
