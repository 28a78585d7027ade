"""Train the bundled LSTM forecaster (fastrnn/models/forecaster.safetensors).

    python examples/train_forecaster.py [--steps 1500] [--out-dir fastrnn/models]

Data: a generated series, noisy sum of sinusoids (see ``make_series``; seeded, so it is rebuilt
exactly). The first 8,000 steps train the model, the next 600 are held out and stored next to the
model (forecaster_heldout.npy) for ``fastrnn demo``. Model: LSTM(1, 48) -> Select(-1) -> Linear(48, 1),
a sequence-to-one regressor trained with torch on 96-step windows to predict the next value; the
demo forecasts autoregressively with fastrnn's ``Sequential.forecast``. A minute or two on 2 cores.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from fastrnn.models import Linear, Select, Sequential, from_torch_module, load_model, save_model  # noqa: E402

OUT_DIR = os.path.join(os.path.dirname(HERE), "fastrnn", "models")
TRAIN_LEN, HELDOUT_LEN = 8000, 600


def make_series(n, seed=0, noise=0.1):
    """Noisy sum of sinusoids (periods 24, 9.5 and 61 steps), float32."""
    t = np.arange(n, dtype=np.float64)
    clean = (np.sin(2 * np.pi * t / 24.0) + 0.5 * np.sin(2 * np.pi * t / 9.5 + 1.0)
             + 0.3 * np.sin(2 * np.pi * t / 61.0 + 2.0))
    rng = np.random.default_rng(seed)
    return (clean + noise * rng.standard_normal(n)).astype(np.float32), clean.astype(np.float32)


class Forecaster(nn.Module):
    def __init__(self, hidden=48):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out)  # every step predicts the next value


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--window", type=int, default=96)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default=OUT_DIR)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed + 1)

    series, clean = make_series(TRAIN_LEN + HELDOUT_LEN, seed=args.seed)
    train = series[:TRAIN_LEN]
    model = Forecaster()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr / 20)
    t0 = time.time()
    W = args.window
    for step in range(1, args.steps + 1):
        starts = rng.integers(0, TRAIN_LEN - W - 1, args.batch)
        idx = starts[:, None] + np.arange(W + 1)[None]
        seq = torch.from_numpy(train[idx])[..., None]
        pred = model(seq[:, :-1])
        loss = ((pred[:, 16:] - seq[:, 17:]) ** 2).mean()  # skip the warm-up steps
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps:
            print(f"step {step:5d}  one-step MSE {loss.item():.4f}  ({time.time() - t0:.0f} s)", flush=True)

    # sequence-to-one fastrnn model: LSTM -> last step -> Linear
    fmodel = Sequential(from_torch_module(model.lstm), Select(-1), from_torch_module(model.fc))
    assert isinstance(fmodel[2], Linear)
    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "forecaster.safetensors")
    meta = {"description": "LSTM forecaster of a noisy sum of sinusoids (examples/train_forecaster.py)",
            "training": json.dumps({"steps": args.steps, "batch": args.batch, "window": W, "lr": args.lr,
                                    "seed": args.seed, "final_one_step_mse": round(loss.item(), 5),
                                    "series": "make_series(8600, seed) in examples/train_forecaster.py"})}
    save_model(fmodel, path, metadata=meta)
    held = os.path.join(args.out_dir, "forecaster_heldout.npy")
    np.save(held, np.stack([series[TRAIN_LEN:], clean[TRAIN_LEN:]]))  # (2, 600): noisy, noise-free
    back = load_model(path)
    ctx = series[TRAIN_LEN - 200:TRAIN_LEN]
    with torch.no_grad():
        want = model(torch.from_numpy(ctx)[None, :, None])[0, -1, 0].item()
    got = back.forecast(ctx, 1)[0]
    print(f"saved {path} ({os.path.getsize(path) / 1e3:.0f} kB) and {held}; "
          f"|fastrnn - torch| next value {abs(got - want):.1e}")


if __name__ == "__main__":
    main()
