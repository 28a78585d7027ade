"""Train the bundled character-level LSTM language model (fastrnn/models/char_lm.safetensors).

    python examples/train_char_lm.py [--steps 600] [--out fastrnn/models/char_lm.safetensors]

Data: examples/data/us_founding_documents.txt (public-domain US documents, see
examples/data/README.md). Model: Embedding(V, 32) -> LSTM(32, 160, num_layers=2) -> Linear(160, V),
trained with torch (Adam, truncated BPTT over 64-character windows, seeded), then converted with
fastrnn.models.from_torch_module and written with fastrnn.models.save_model; the vocabulary is
stored in the file's metadata (key "vocab", a JSON list of characters). A few minutes on 2 cores.
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

from fastrnn.models import from_torch_module, load_model, save_model  # noqa: E402

DATA = os.path.join(HERE, "data", "us_founding_documents.txt")
OUT = os.path.join(os.path.dirname(HERE), "fastrnn", "models", "char_lm.safetensors")


class CharLM(nn.Module):
    def __init__(self, vocab, emb=32, hidden=160, layers=2):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, ids, state=None):
        out, state = self.lstm(self.emb(ids), state)
        return self.fc(out), state


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    text = open(DATA, encoding="utf-8").read()
    vocab = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(vocab)}
    data = np.array([stoi[ch] for ch in text], dtype=np.int64)
    split = int(len(data) * 0.95)
    train, val = data[:split], data[split:]
    print(f"{len(text)} characters, vocabulary {len(vocab)}; train {len(train)}, validation {len(val)}")

    model = CharLM(len(vocab))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr / 20)
    lossf = nn.CrossEntropyLoss()
    t0 = time.time()
    for step in range(1, args.steps + 1):
        starts = rng.integers(0, len(train) - args.seq - 1, args.batch)
        idx = starts[:, None] + np.arange(args.seq + 1)[None]
        batch = torch.from_numpy(train[idx])
        logits, _ = model(batch[:, :-1])
        loss = lossf(logits.reshape(-1, len(vocab)), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps:
            with torch.no_grad():
                v = torch.from_numpy(val[None])
                vl = lossf(model(v[:, :-1])[0].reshape(-1, len(vocab)), v[0, 1:]).item()
            print(f"step {step:5d}  train loss {loss.item():.3f}  validation loss {vl:.3f}  "
                  f"({time.time() - t0:.0f} s)", flush=True)

    model.eval()
    fmodel = from_torch_module(nn.ModuleList([model.emb, model.lstm, model.fc]))
    meta = {"vocab": json.dumps(vocab), "description": "character-level LSTM language model trained on "
            "public-domain US documents (examples/train_char_lm.py)",
            "training": json.dumps({"steps": args.steps, "batch": args.batch, "seq": args.seq, "lr": args.lr,
                                    "seed": args.seed, "final_train_loss": round(loss.item(), 4),
                                    "validation_loss": round(vl, 4)})}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_model(fmodel, args.out, metadata=meta)
    # check: the saved model reproduces torch's logits
    back = load_model(args.out)
    ids = train[:200]
    with torch.no_grad():
        want = model(torch.from_numpy(ids[None]))[0][0].numpy()
    got = back(ids[None])[0][0]
    print(f"saved {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB); max |fastrnn - torch| logits "
          f"{np.abs(got - want).max():.2e}")


if __name__ == "__main__":
    main()
