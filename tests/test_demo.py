"""`fastrnn demo` (fastrnn.demo) and the bundled models in fastrnn/models/."""
import json
import os
import re

import numpy as np
import pytest

import fastrnn
from fastrnn import demo
from fastrnn.models import Embedding, Linear, Select, Sequential

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None

MODELS_DIR = os.path.join(os.path.dirname(fastrnn.__file__), "models")


def test_bundled_files_are_small_and_load():
    for name in ("char_lm.safetensors", "forecaster.safetensors", "forecaster_heldout.npy"):
        path = os.path.join(MODELS_DIR, name)
        assert os.path.isfile(path), name
        assert os.path.getsize(path) < 2_000_000, name
    lm, meta = demo.load_bundled("char_lm")
    assert isinstance(lm, Sequential) and isinstance(lm[0], Embedding) and isinstance(lm[-1], Linear)
    vocab = json.loads(meta["vocab"])
    assert len(vocab) == lm[0].num_embeddings and len(set(vocab)) == len(vocab)
    fc, _ = demo.load_bundled("forecaster")
    assert isinstance(fc[1], Select) and fc[-1].out_features == fc[0].input_size == 1
    with pytest.raises(ValueError):
        demo.load_bundled("nope")


def _run(capsys, *argv):
    rc = demo.main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_demo_output(capsys):
    rc, out, err = _run(capsys, "--tokens", "60", "--bench-time", "0.02")
    assert rc == 0, err
    assert "[1] Character-level language model" in out and "[2] Forecaster" in out and "[3] Throughput" in out
    assert "prompt: 'We hold these truths'" in out
    assert "| We hold these truths" in out
    m = re.search(r"RMSE ([0-9.]+)\s+MAE ([0-9.]+)", out)
    assert m, out
    rmse, mae = float(m.group(1)), float(m.group(2))
    base = float(re.search(r"last value repeated RMSE ([0-9.]+)", out).group(1))
    assert 0 < mae <= rmse < 0.3 < base  # far better than the naive baseline, close to the noise level
    assert "generation, batch  1 (tokens/s)" in out and "forecast, batch 8 (steps/s)" in out
    if torch is not None:
        assert "greedy generation matches torch token for token: yes (60 tokens)" in out
        assert re.search(r"forecast vs torch loop: max \|difference\| [0-9.]+e-0[5-9]", out)
        rows = [ln for ln in out.splitlines() if "(tokens/s)" in ln or "(steps/s)" in ln]
        assert rows and all(ln.rstrip().endswith("x") for ln in rows)
    else:  # pragma: no cover
        assert "torch" not in out.split("[1]")[1].split("[3]")[0]


def test_demo_without_torch_and_without_bench(capsys):
    rc, out, err = _run(capsys, "--no-torch", "--bench-time", "0", "--tokens", "20", "--prompt", "Congress")
    assert rc == 0, err
    assert "torch: not used" in out and "matches torch" not in out and "[3]" not in out
    assert "| Congress" in out


def test_demo_sampling_is_seeded(capsys):
    args = ("--no-torch", "--bench-time", "0", "--tokens", "50", "--seed", "3", "--temperature", "1.0",
            "--top-k", "5")
    _, a, _ = _run(capsys, *args)
    _, b, _ = _run(capsys, *args)
    assert a == b


def test_demo_bad_arguments(capsys):
    rc, _, err = _run(capsys, "--no-torch", "--bench-time", "0", "--prompt", "~~ unknown ~~")
    assert rc == 2 and "vocabulary" in err
    rc, _, err = _run(capsys, "--no-torch", "--bench-time", "0", "--horizon", "5000")
    assert rc == 2 and "held-out" in err
    rc, _, err = _run(capsys, "--no-torch", "--bench-time", "0", "--tokens", "0")
    assert rc == 2


@pytest.mark.skipif(torch is None, reason="torch not installed")
def test_bundled_lm_greedy_matches_torch():
    lm, meta = demo.load_bundled("char_lm")
    vocab = json.loads(meta["vocab"])
    stoi = {c: i for i, c in enumerate(vocab)}
    prompts = ["We hold these truths", "Four score and seven", "The right of the people"]
    L = min(map(len, prompts))
    ids = np.array([[stoi[c] for c in p[:L]] for p in prompts])
    got = lm.generate(ids, 120, temperature=0)
    want = demo.torch_generate_greedy(torch, demo._torch_lm(torch, lm), ids, 120)
    np.testing.assert_array_equal(got, want)


def test_cli_subcommand(capsys):
    cli = pytest.importorskip("fastrnn.cli")
    rc = cli.main(["demo", "--no-torch", "--bench-time", "0", "--tokens", "10"])
    out = capsys.readouterr().out
    assert rc == 0 and "[2] Forecaster" in out
