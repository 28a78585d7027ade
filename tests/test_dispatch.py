"""Every path the dispatcher can choose, forced, against the numpy reference.

ISA (scalar / AVX2 / AVX-512, each if the CPU has it) x threads (1, 2) x the
fused recurrent path: one product a step (LSTM, GRU linear-before-reset, RNN)
or two (original-form GRU, LSTM with projection); results must not depend on
the thread count beyond 1e-6.
"""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from reference import check_layer, random_states

ISAS = ["scalar", "avx2", "avx512"]
SPECS = ["lstm", "gru", "gru_lbr0", "rnn_tanh", "rnn_relu"]
# 20 rows of unequal lengths, some empty, some full
LENGTHS20 = np.array([7, 0, 3, 7, 1, 5, 7, 2, 6, 7, 4, 7, 7, 7, 1, 2, 3, 7, 6, 5])


def flat(res):
    """A layer's result as a list of arrays: output, h_n (, c_n)."""
    return [res[0]] + (list(res[1]) if isinstance(res[1], tuple) else [res[1]])


# the cells of SPECS plus the LSTM with projection
ALL_SPECS = SPECS + ["lstm_proj"]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("spec", ["lstm", "gru", "gru_lbr0", "lstm_proj"])
def test_batch1_chunk_pairs_match_reference(fastrnn, make_layer, isa_threads, isa, spec):
    """Batch 1 runs the gate math of two chunks of units at once: hidden sizes that leave a
    pair only (16 on AVX2), a lone chunk after the pairs (48), a partial chunk after a pair
    (40) or alone (8), with and without an initial state, both directions, 1 and 2 threads."""
    if not fastrnn.isa_supported(isa):
        pytest.skip(f"CPU lacks {isa}")
    fastrnn.set_isa(isa)
    rng = np.random.default_rng(3)
    for H in (8, 16, 40, 48, 72, 200):
        extra = {"proj_size": 5} if spec == "lstm_proj" else {}
        layer, params, cell, cfg = make_layer("lstm" if spec == "lstm_proj" else spec, rng, input_size=6,
                                              hidden_size=H, bidirectional=True, **extra)
        x = rng.standard_normal((9, 1, 6)).astype(np.float32)
        for hx in (None, random_states(cell, cfg, 1, rng)):
            results = []
            for threads in (1, 2):
                fastrnn.set_num_threads(threads)
                results.append(check_layer(layer, cell, params, cfg, x, hx,
                                           what=f"{isa} {spec} H={H} threads={threads}"))
            for u, v in zip(flat(results[0]), flat(results[1])):
                assert np.max(np.abs(u - v)) <= 1e-6


# how the threads split a layer, and "+step": each step projects its own input
MODES = ["hidden", "batch", "hidden+step", "batch+step"]


def force(core, mode):
    """Force a mode of MODES ("auto": both back to auto)."""
    par, _, proj = mode.partition("+")
    core.set_parallel(par)
    core.set_projection(proj or ("upfront" if par != "auto" else "auto"))


def bidir_layer(fastrnn, make_layer, isa, spec, seed, num_layers=2):
    """ISA forced (skip if absent); a bidirectional layer, H=64: steps big enough for
    two threads even for the RNN. spec: of SPECS, or "lstm_proj" (proj_size 16)."""
    if not fastrnn.isa_supported(isa):
        pytest.skip(f"CPU lacks {isa}")
    fastrnn.set_isa(isa)
    rng = np.random.default_rng(seed)
    extra = {"proj_size": 16} if spec == "lstm_proj" else {}
    return rng, make_layer("lstm" if spec == "lstm_proj" else spec, rng, input_size=24, hidden_size=64,
                           num_layers=num_layers, bidirectional=True, **extra)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("spec", SPECS)
def test_forced_paths_match_reference(fastrnn, make_layer, isa_threads, isa, spec):
    if not fastrnn.isa_supported(isa):
        pytest.skip(f"CPU lacks {isa}")
    fastrnn.set_isa(isa)
    assert fastrnn.get_isa() == isa
    rng = np.random.default_rng(7)
    # H=200 makes steps big enough to use threads; 37 exercises the tails.
    # projections of 13 and 70 units: output blocks with tails, a pass of 4 blocks and a rest
    for H, bidir, proj in [(200, True, 0), (37, False, 0), (64, True, 16), (37, True, 13), (200, False, 70)]:
        if proj and spec != "lstm":
            continue
        extra = {"proj_size": proj} if proj else {}
        layer, params, cell, cfg = make_layer(spec, rng, input_size=24, hidden_size=H,
                                              num_layers=2, bidirectional=bidir, **extra)
        x = rng.standard_normal((9, 5, 24)).astype(np.float32)
        lengths = np.array([9, 0, 4, 9, 1])
        hx = random_states(cell, cfg, 5, rng)
        results = []
        for threads in (1, 2):
            fastrnn.set_num_threads(threads)
            results.append(check_layer(layer, cell, params, cfg, x, hx, lengths,
                                       what=f"{isa} {spec} H={H} threads={threads}"))
        a, b = results
        for u, v in zip(flat(a), flat(b)):
            assert np.max(np.abs(u - v)) <= 1e-6


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_activations_match_libm(fastrnn, isa_threads, isa):
    """The vectorised sigmoid/tanh (and exp-based ones) within 1e-6 of float64 math."""
    if not fastrnn.isa_supported(isa):
        pytest.skip(f"CPU lacks {isa}")
    fastrnn.set_isa(isa)
    from fastrnn._core import apply_activation
    x = np.concatenate([np.linspace(-30, 30, 200001), [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0,
                                                         1e4, -1e4]]).astype(np.float32)
    xd = x.astype(np.float64)
    sig = apply_activation(0, 0, 0, x)
    tnh = apply_activation(1, 0, 0, x)
    elu = apply_activation(8, 1.0, 0, x)
    assert np.max(np.abs(sig - 1 / (1 + np.exp(-xd)))) <= 1e-6
    assert np.max(np.abs(tnh - np.tanh(xd))) <= 1e-6
    assert np.max(np.abs(elu - np.where(xd < 0, np.expm1(xd), xd))) <= 1e-6
    small = np.float32([1e-8, -3e-7, 2e-4])
    np.testing.assert_allclose(apply_activation(1, 0, 0, small), np.tanh(small.astype(np.float64)), rtol=1e-6)
    special = np.float32([np.inf, -np.inf, np.nan, 200, -200])
    np.testing.assert_array_equal(apply_activation(0, 0, 0, special), [1, 0, np.nan, 1, 0])
    np.testing.assert_array_equal(apply_activation(1, 0, 0, special), [1, -1, np.nan, 1, -1])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_gate_kernel_activations_match_libm(fastrnn, isa_threads, isa):
    """The fused gate kernels' own sigmoid (interleaved) and tanh (2 sigmoid(2x) - 1):
    within 1e-6 absolute of float64 math, exact saturation, NaN propagated, for
    every length (full vectors and tails)."""
    if not fastrnn.isa_supported(isa):
        pytest.skip(f"CPU lacks {isa}")
    fastrnn.set_isa(isa)
    from fastrnn._core import apply_activation
    x = np.concatenate([np.linspace(-30, 30, 200001), [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 88.8,
                                                         -88.8, 104.0, -104.0, 1e4, -1e4]]).astype(np.float32)
    xd = x.astype(np.float64)
    for n in (len(x), 1, 17, 129):
        sig = apply_activation(101, 0, 0, x[-n:])
        tnh = apply_activation(100, 0, 0, x[-n:])
        assert np.max(np.abs(sig - 1 / (1 + np.exp(-xd[-n:])))) <= 1e-6
        assert np.max(np.abs(tnh - np.tanh(xd[-n:]))) <= 1e-6
    special = np.float32([np.inf, -np.inf, np.nan, 200, -200])
    np.testing.assert_array_equal(apply_activation(101, 0, 0, special), [1, 0, np.nan, 1, 0])
    np.testing.assert_array_equal(apply_activation(100, 0, 0, special), [1, -1, np.nan, 1, -1])


@pytest.mark.parametrize("isa", ISAS)
def test_read_probe_reads_every_float(fastrnn, isa_threads, isa):
    """The benchmarks' read loop (compare.py's L2 bandwidth) sums every float of its array on
    every pass, the tail past the last whole vector group included, forwards or (zigzag)
    backwards on odd passes; it takes only a C-contiguous 1-d float32 array."""
    if not fastrnn.isa_supported(isa):
        pytest.skip(f"CPU lacks {isa}")
    fastrnn.set_isa(isa)
    from fastrnn import _core
    for n in (0, 5, 128, 300, 4096 + 77):
        a = (np.arange(n) % 7).astype(np.float32)
        assert _core._read_probe(a, 3) == 3 * float(a.sum())
        for reps in (1, 2, 3):
            assert _core._read_probe(a, reps, zigzag=True) == reps * float(a.sum())
    assert _core._read_probe(np.ones(10, np.float32), 0) == 0.0
    for bad in (np.ones(10), np.ones((2, 5), np.float32), np.ones(20, np.float32)[::2], [1.0]):
        with pytest.raises(TypeError, match="C-contiguous 1-d float32"):
            _core._read_probe(bad, 1)


def test_env_override_forces_isa(tmp_path):
    code = "import fastrnn; print(fastrnn.get_isa())"
    for isa in ("scalar", "avx2"):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FASTRNN_ISA": isa},
                             capture_output=True, text=True, check=True).stdout.strip()
        import fastrnn
        assert out == (isa if fastrnn.isa_supported(isa) else out)


def test_num_threads_api(fastrnn, isa_threads):
    fastrnn.set_num_threads(3)
    assert fastrnn.get_num_threads() == 3
    with pytest.raises(ValueError):
        fastrnn.set_num_threads(0)
    with pytest.raises(TypeError):
        fastrnn.set_num_threads(2.5)
    # more than the team's maximum (also past a C int): clamped, as for one layer
    from fastrnn import _core
    for n in (10**9, 2**31, 2**70):
        fastrnn.set_num_threads(n)
        assert fastrnn.get_num_threads() == _core.MAX_THREADS
    layer = fastrnn.LSTM(8, 32, seed=0)
    layer.num_threads = 2**31
    assert layer.num_threads == _core.MAX_THREADS
    layer.num_threads = 4
    x = np.ones((50, 64, 8), np.float32)
    ref = layer(x)[0]
    layer.num_threads = 10**9   # it failed with MemoryError naming T and B
    np.testing.assert_allclose(layer(x)[0], ref, atol=1e-6)


@pytest.mark.parametrize("var,value,warns", [
    ("FASTRNN_NUM_THREADS", "99999999999", None), ("FASTRNN_NUM_THREADS", "abc", "not an integer"),
    ("FASTRNN_PARALLEL", "bogus", "not one of auto"), ("FASTRNN_ISA", "bogus", "not one of scalar"),
    ("FASTRNN_PARALLEL", "batch", None), ("FASTRNN_PROJECTION", "bogus", "not one of auto"),
    ("FASTRNN_PROJECTION", "step", None)])
def test_environment_values_never_stop_import(var, value, warns):
    """A value fastrnn cannot use is a warning and the default is kept; import goes on."""
    code = "import fastrnn, numpy as np; print(fastrnn.LSTM(2, 3, seed=0)(np.ones((2, 1, 2), np.float32))[0].shape)"
    r = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True,
                       env={**os.environ, var: value})
    assert r.returncode == 0 and "(2, 1, 3)" in r.stdout, r.stderr[-2000:]
    if warns:
        assert "RuntimeWarning" in r.stderr and warns in r.stderr, r.stderr
    else:
        assert "Warning" not in r.stderr, r.stderr


def test_per_layer_thread_override(fastrnn, make_layer, isa_threads):
    rng = np.random.default_rng(3)
    layer, params, cell, cfg = make_layer("lstm", rng, input_size=8, hidden_size=200)
    x = rng.standard_normal((6, 3, 8)).astype(np.float32)
    fastrnn.set_num_threads(2)
    ref = layer(x)[0]
    layer.num_threads = 1
    assert layer.num_threads == 1
    np.testing.assert_allclose(layer(x)[0], ref, atol=1e-6)
    layer.load_state_dict(layer.state_dict())  # the override survives repacking
    assert layer.num_threads == 1 and layer._net.num_threads == 1
    layer.num_threads = None
    with pytest.raises(ValueError):
        layer.num_threads = 0


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize("mode", MODES)
def test_forced_parallel_modes_match_reference(fastrnn, make_layer, isa_threads, parallel_mode, isa, spec,
                                               mode):
    """Both ways of splitting a layer over threads, forced, against the reference and
    against one thread: equal and unequal lengths, both directions, 2 layers."""
    rng, (layer, params, cell, cfg) = bidir_layer(fastrnn, make_layer, isa, spec, 11)
    # B=20: past the batch size where the two directions run side by side
    x = rng.standard_normal((7, 20, 24)).astype(np.float32)
    hx = random_states(cell, cfg, 20, rng)
    for lengths in (None, LENGTHS20):
        fastrnn.set_num_threads(1)
        one = check_layer(layer, cell, params, cfg, x, hx, lengths, what=f"{isa} {spec} 1 thread")
        fastrnn.set_num_threads(2)
        force(parallel_mode, mode)
        two = check_layer(layer, cell, params, cfg, x, hx, lengths, what=f"{isa} {spec} {mode}")
        force(parallel_mode, "auto")
        for u, v in zip(flat(one), flat(two)):
            assert np.max(np.abs(u - v)) <= 1e-6


def zero_state_runs(fastrnn, parallel_mode, mode, rng, tag):
    """B=1, B=20 and B=20 with unequal lengths, each on 1 and 2 threads with `mode`
    forced: yields (B, lengths, x, what) while the mode is set (auto again after)."""
    for B, lengths in [(1, None), (20, None), (20, LENGTHS20)]:
        x = rng.standard_normal((7, B, 24)).astype(np.float32)
        for threads in (1, 2):
            fastrnn.set_num_threads(threads)
            force(parallel_mode, mode)
            yield B, lengths, x, f"{tag} {mode} B={B} threads={threads}"
            force(parallel_mode, "auto")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize("mode", MODES)
def test_no_initial_state_equals_zero_state(fastrnn, make_layer, isa_threads, parallel_mode, isa, spec,
                                            mode):
    """Without hx the first step's recurrent product is skipped (it is zero); with an
    explicit zero hx it is computed. Both must give the same numbers, and the reference's."""
    rng, (layer, params, cell, cfg) = bidir_layer(fastrnn, make_layer, isa, spec, 13)
    for B, lengths, x, what in zero_state_runs(fastrnn, parallel_mode, mode, rng, f"{isa} {spec}"):
        hx = random_states(cell, cfg, B, rng)
        zeros = tuple(np.zeros_like(a) for a in hx) if cell == "LSTM" else np.zeros_like(hx)
        none = check_layer(layer, cell, params, cfg, x, None, lengths, what=what + " no hx")
        zero = check_layer(layer, cell, params, cfg, x, zeros, lengths, what=what + " zero hx")
        for u, v in zip(flat(none), flat(zero)):
            np.testing.assert_array_equal(u, v, err_msg=what)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's 0 * inf
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize("mode", MODES)
def test_no_initial_state_with_nonfinite_w_hh(fastrnn, make_layer, isa_threads, parallel_mode, isa, spec,
                                              mode):
    """0 * inf is NaN: with an inf in W_hh the product of the zero initial state is
    not zero, and a call without hx must not skip it. One layer, so the first step's
    NaN (in unit 0) shows in the output; NaN pattern as the reference's."""
    rng, (layer, params, cell, cfg) = bidir_layer(fastrnn, make_layer, isa, spec, 17, num_layers=1)
    for name in ("weight_hh_l0", "weight_hh_l0_reverse"):
        params[name] = params[name].copy()
        params[name][0, 0] = np.inf   # gate 0 of unit 0, from h's unit 0
    layer.load_state_dict(params)
    for B, lengths, x, what in zero_state_runs(fastrnn, parallel_mode, mode, rng, f"{isa} {spec}"):
        out = flat(check_layer(layer, cell, params, cfg, x, None, lengths, what=what))[0]
        assert np.isnan(out[0, 0, 0]), what   # (the original-form GRU: every unit)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("spec", ALL_SPECS)
def test_step_projection_in_row_chunks(fastrnn, make_layer, isa_threads, parallel_mode, isa, spec):
    """Steps that project their own input, with more rows a thread than one chunk
    (B=200: 1 thread, and 2 threads batch-parallel), an input width that is not a
    multiple of the kernels' blocks, batch-first, from h0 and from a zero state;
    the cells it does not apply to (GRU, LSTM with projection) run their own path,
    with as many rows. Against the reference and against the projection of all
    steps up front (auto, too)."""
    if not fastrnn.isa_supported(isa):
        pytest.skip(f"CPU lacks {isa}")
    fastrnn.set_isa(isa)
    rng = np.random.default_rng(23)
    extra = {"proj_size": 21} if spec == "lstm_proj" else {}
    layer, params, cell, cfg = make_layer("lstm" if spec == "lstm_proj" else spec, rng, input_size=37,
                                          hidden_size=40, num_layers=2, bidirectional=True, batch_first=True,
                                          **extra)
    x = rng.standard_normal((200, 4, 37)).astype(np.float32)
    for hx in (None, random_states(cell, cfg, 200, rng)):
        results = []
        for threads, mode in [(1, "hidden"), (1, "hidden+step"), (2, "batch+step"), (1, "auto"),
                              (2, "auto")]:
            fastrnn.set_num_threads(threads)
            force(parallel_mode, mode)
            what = f"{isa} {spec} {mode} threads={threads} h0={hx is not None}"
            results.append(check_layer(layer, cell, params, cfg, x, hx, what=what))
            force(parallel_mode, "auto")
        for other in results[1:]:
            for u, v in zip(flat(results[0]), flat(other)):
                assert np.max(np.abs(u - v)) <= 1e-6


def test_parallel_mode_api(parallel_mode):
    parallel_mode.set_parallel("batch")
    assert parallel_mode.get_parallel() == "batch"
    with pytest.raises(ValueError):
        parallel_mode.set_parallel("both")
    parallel_mode.set_projection("step")
    assert parallel_mode.get_projection() == "step"
    with pytest.raises(ValueError):
        parallel_mode.set_projection("both")
