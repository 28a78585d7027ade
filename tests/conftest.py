"""Shared fixtures for the fastrnn test-suite.

The numpy reference lives in tests/reference.py (importable as ``reference`` because pytest puts
this directory on sys.path for rootdir-less test modules).
"""
import importlib.util
import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
# plain `pytest` from the repository root: make the in-place build (python setup.py build_ext
# --inplace) importable, unless a fastrnn is importable already (e.g. an installed wheel)
if importlib.util.find_spec("fastrnn") is None:
    sys.path.insert(1, os.path.dirname(_HERE))

from reference import (  # noqa: E402
    CELL_SPECS, make_params, normalise_config)

try:  # hypothesis profiles: "fastrnn-ci" (default, deterministic), "thorough" for local runs
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "fastrnn-ci", deadline=None, max_examples=60, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True)
    settings.register_profile(
        "thorough", deadline=None, max_examples=1000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fastrnn-ci"))
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def fastrnn():
    import fastrnn as _fastrnn
    return _fastrnn


@pytest.fixture
def isa_threads(fastrnn):
    """Restores the ISA and the thread count a test changes."""
    old_isa, old_threads = fastrnn.get_isa(), fastrnn.get_num_threads()
    yield
    fastrnn.set_isa(old_isa)
    fastrnn.set_num_threads(old_threads)


@pytest.fixture
def parallel_mode():
    """fastrnn._core, with the parallel mode (hidden / batch / auto) restored after."""
    from fastrnn import _core
    old, oldp = _core.get_parallel(), _core.get_projection()
    yield _core
    _core.set_parallel(old)
    _core.set_projection(oldp)


@pytest.fixture
def projection_chunk():
    """fastrnn._core, with the projection's chunk setting restored after."""
    from fastrnn import _core
    yield _core
    _core._set_projection_chunk(0)


@pytest.fixture(scope="session")
def make_layer(fastrnn):
    """Factory: make_layer(spec_or_cell, rng, **config) -> (layer, params, cell, full_config).

    ``spec_or_cell`` is a key of reference.CELL_SPECS ("lstm", "gru", "gru_lbr0", "rnn_tanh",
    "rnn_relu") or a class name ("LSTM", "GRU", "RNN").  Random parameters with PyTorch's
    default init are generated with ``rng`` and loaded with ``load_state_dict``; the same dict is
    what the reference gets.
    """

    def _make(spec, rng, params_scale=None, **config):
        if spec in CELL_SPECS:
            cell, extra = CELL_SPECS[spec]
            config = {**extra, **config}
        else:
            cell = spec.upper()
        input_size = config.pop("input_size")
        hidden_size = config.pop("hidden_size")
        layer = getattr(fastrnn, cell)(input_size, hidden_size, **config)
        full = normalise_config(cell, dict(config, input_size=input_size, hidden_size=hidden_size))
        params = make_params(cell, full, rng, scale=params_scale)
        layer.load_state_dict(params)
        return layer, params, cell, full

    return _make
