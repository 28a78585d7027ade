"""Accuracy of fastrnn's bf16 and int8 layers against float32.

1. Max abs difference of the outputs at T=100 (B=3, 2 bidirectional layers,
   torch-default-initialised weights, H=256) for every cell.
2. The same for one layer at B=64 (6400 outputs a unit, so the tail of the
   error shows), H = I in {256, 512, 1024}: the worst of three input draws;
   and at B=1 (int8 h quantized per block of 64 units there), the worst of
   eight.
3. The task metric of the bundled trained models: the char-LM's cross-entropy
   (nats/char, on the text it was trained on) and the forecaster's RMSE on its
   held-out series.

Run: python benchmarks/quant_accuracy.py
"""
import json
import pathlib
import sys

import numpy as np

# the checkout's fastrnn when it is built in place and not installed
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import fastrnn  # noqa: E402
from fastrnn import RNNBase  # noqa: E402
from fastrnn.demo import _heldout, load_bundled  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def output_errors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 3, 256)).astype(np.float32)
    for name, make in [("LSTM", lambda: fastrnn.LSTM(256, 256, 2, bidirectional=True, seed=1)),
                       ("GRU", lambda: fastrnn.GRU(256, 256, 2, bidirectional=True, seed=1)),
                       ("RNN", lambda: fastrnn.RNN(256, 256, 2, bidirectional=True, seed=1))]:
        layer = make()
        ref = layer(x)[0]
        errs = {dt: float(np.abs(layer.quantize(dt)(x)[0] - ref).max()) for dt in ("bf16", "int8")}
        print(f"  {name:5s} bf16 {errs['bf16']:.1e}   int8 {errs['int8']:.1e}")


def batched_errors(B=64, seeds=(1, 2, 3)):
    for name, cls in [("LSTM", fastrnn.LSTM), ("GRU", fastrnn.GRU), ("RNN", fastrnn.RNN)]:
        cols = []
        for H in (256, 512, 1024):
            layer = cls(H, H, seed=0)
            q = {dt: layer.quantize(dt) for dt in ("bf16", "int8")}
            worst = {"bf16": 0.0, "int8": 0.0}
            for seed in seeds:
                x = np.random.default_rng(seed).standard_normal((100, B, H)).astype(np.float32)
                ref = layer(x)[0]
                for dt in worst:
                    worst[dt] = max(worst[dt], float(np.abs(q[dt](x)[0] - ref).max()))
            cols.append(f"H={H}: bf16 {worst['bf16']:.1e} int8 {worst['int8']:.1e}")
        print(f"  {name:5s} " + "   ".join(cols))


def quantized(model, dtype):
    return fastrnn.Sequential(*[m.quantize(dtype) if isinstance(m, RNNBase) else m for m in model])


def task_metrics():
    lm, meta = load_bundled("char_lm")
    fc, _ = load_bundled("forecaster")
    vocab = json.loads(meta["vocab"])
    stoi = {c: i for i, c in enumerate(vocab)}
    text = (ROOT / "examples" / "data" / "us_founding_documents.txt").read_text()
    ids = np.array([stoi[c] for c in text if c in stoi])
    n = (len(ids) - 1) // 200 * 200
    xs, ys = ids[:n].reshape(-1, 200), ids[1:n + 1].reshape(-1, 200)

    def lm_loss(m):
        z = m(xs)[0]
        z = z - z.max(-1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return float(-np.take_along_axis(lp, ys[..., None], -1).mean())

    noisy, _ = _heldout()
    C, H = 200, 50
    starts = np.arange(0, len(noisy) - C - H + 1, H)[:8]
    w = np.stack([noisy[s:s + C] for s in starts])[..., None]
    truth = np.stack([noisy[s + C:s + C + H] for s in starts])

    def rmse(m):
        return float(np.sqrt(np.mean((m.forecast(w, H)[..., 0] - truth) ** 2)))

    base_l, base_r = lm_loss(lm), rmse(fc)
    print(f"  float32  char-LM {base_l:.4f} nats/char   forecaster RMSE {base_r:.4f}")
    for dt in ("bf16", "int8"):
        lo, r = lm_loss(quantized(lm, dt)), rmse(quantized(fc, dt))
        print(f"  {dt:7s}  char-LM {lo:.4f} ({100 * (lo - base_l) / base_l:+.2f}%)        "
              f"forecaster RMSE {r:.4f} ({100 * (r - base_r) / base_r:+.2f}%)")


if __name__ == "__main__":
    print("max abs difference to float32, T=100, B=3, 2 bidirectional layers, H=256:")
    output_errors()
    print("max abs difference to float32, T=100, B=64, one layer, worst of 3 inputs:")
    batched_errors()
    print("the same at B=1, worst of 8 inputs:")
    batched_errors(1, range(1, 9))
    print("task metrics of the bundled models:")
    task_metrics()
