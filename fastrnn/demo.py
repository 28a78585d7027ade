"""``fastrnn demo``: the two bundled models at work.

1. A character-level LSTM language model (fastrnn/models/char_lm.safetensors, trained by
   examples/train_char_lm.py on public-domain US documents) continues a prompt, greedily and
   sampled (seeded).
2. An LSTM forecaster (fastrnn/models/forecaster.safetensors, examples/train_forecaster.py)
   forecasts a held-out stretch of its generated series (fastrnn/models/forecaster_heldout.npy),
   with RMSE/MAE against the truth and a naive baseline.
3. Throughput (tokens/s, steps/s) next to torch running the same weights, if torch is installed.

Only numpy and fastrnn are needed; torch is optional (comparison only).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from importlib import resources
from typing import Optional

import numpy as np

__all__ = ["main", "load_bundled", "bundled_path", "BUNDLED"]

BUNDLED = ("char_lm", "forecaster")
DEFAULT_PROMPT = "We hold these truths"


@contextlib.contextmanager
def bundled_path(filename: str):
    """Context manager: a filesystem path to a file of fastrnn/models (package data)."""
    ref = resources.files("fastrnn") / "models" / filename
    with resources.as_file(ref) as p:
        if not os.path.exists(p):
            raise FileNotFoundError(f"bundled model file {filename!r} is missing from this fastrnn installation")
        yield p


def load_bundled(name: str):
    """Load a bundled model: ``"char_lm"`` or ``"forecaster"`` -> (model, metadata)."""
    from .models import load_model

    if name not in BUNDLED:
        raise ValueError(f"unknown bundled model {name!r}; available: {', '.join(BUNDLED)}")
    with bundled_path(f"{name}.safetensors") as p:
        return load_model(p, return_metadata=True)


def _heldout():
    with bundled_path("forecaster_heldout.npy") as p:
        arr = np.load(p, allow_pickle=False)
    return arr[0].astype(np.float32), arr[1].astype(np.float32)  # noisy, noise-free


def _arch(model):
    return " -> ".join(repr(m).replace("\n", "") for m in model)


def _rate(fn, units, min_time):
    """Best rate (units/s) over repeats of fn() within ~min_time seconds (at least 2 runs)."""
    fn()  # warm-up
    best, spent, n = 0.0, 0.0, 0
    while n < 2 or spent < min_time:
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        spent += dt
        n += 1
        best = max(best, units / dt)
        if n >= 50:
            break
    return best


# ----------------------------------------------------------------------------------- torch twins
def _torch_lm(torch, model):
    """torch modules with the bundled LM's weights: (embedding, lstm, linear)."""
    emb, rnn, lin = model.modules
    nn = torch.nn
    te = nn.Embedding(emb.num_embeddings, emb.embedding_dim)
    tr = nn.LSTM(rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers, batch_first=rnn.batch_first)
    tl = nn.Linear(lin.in_features, lin.out_features)
    for mod, f in ((te, emb), (tr, rnn), (tl, lin)):
        mod.load_state_dict({k: torch.from_numpy(v) for k, v in f.state_dict().items()})
        mod.eval()
    return te, tr, tl


def torch_generate_greedy(torch, mods, ids, n):
    """Greedy continuation with a torch loop that carries the state (batch-major ids)."""
    emb, rnn, fc = mods
    bf = rnn.batch_first
    x = torch.from_numpy(np.ascontiguousarray(ids))
    toks = []
    with torch.no_grad():
        out, st = rnn(emb(x if bf else x.T))
        logits = fc(out[:, -1] if bf else out[-1])
        for _ in range(n):
            tok = logits.argmax(-1)
            toks.append(tok)
            out, st = rnn(emb(tok[:, None] if bf else tok[None]), st)
            logits = fc(out[:, -1] if bf else out[-1])
    return np.concatenate([ids, torch.stack(toks, 1).numpy()], axis=1)


def _torch_forecaster(torch, model):
    rnn, _, lin = model.modules
    nn = torch.nn
    tr = nn.LSTM(rnn.input_size, rnn.hidden_size, num_layers=rnn.num_layers, batch_first=rnn.batch_first)
    tl = nn.Linear(lin.in_features, lin.out_features)
    tr.load_state_dict({k: torch.from_numpy(v) for k, v in rnn.state_dict().items()})
    tl.load_state_dict({k: torch.from_numpy(v) for k, v in lin.state_dict().items()})
    return tr.eval(), tl.eval()


def torch_forecast(torch, mods, series, horizon):
    """Autoregressive forecast with a torch loop (series (B, T, F) -> (B, horizon, F))."""
    rnn, fc = mods
    bf = rnn.batch_first
    x = torch.from_numpy(np.ascontiguousarray(series if bf else series.transpose(1, 0, 2)))
    with torch.no_grad():
        out, st = rnn(x)
        y = fc(out[:, -1] if bf else out[-1])
        preds = [y]
        for _ in range(horizon - 1):
            out, st = rnn(y[:, None] if bf else y[None], st)
            y = fc(out[:, -1] if bf else out[-1])
            preds.append(y)
    return torch.stack(preds, 1).numpy()


# ----------------------------------------------------------------------------------- the demo
def _encode(text, stoi):
    bad = sorted({c for c in text if c not in stoi})
    if bad:
        raise ValueError(f"the prompt has characters outside the model's vocabulary: {''.join(bad)!r}")
    return np.array([stoi[c] for c in text], dtype=np.int64)


def _parser():
    ap = argparse.ArgumentParser(prog="fastrnn demo", description="Run fastrnn's bundled models: text "
                                 "generation, forecasting and throughput next to torch.")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"text to continue (default {DEFAULT_PROMPT!r})")
    ap.add_argument("--tokens", type=int, default=240, help="characters to generate (default 240)")
    ap.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default 0.8)")
    ap.add_argument("--top-k", type=int, default=None, help="sample among the k most likely characters")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ap.add_argument("--context", type=int, default=200, help="forecast context length (default 200)")
    ap.add_argument("--horizon", type=int, default=50, help="forecast horizon (default 50)")
    ap.add_argument("--bench-time", type=float, default=0.5,
                    help="seconds spent per throughput measurement (default 0.5; 0 skips the section)")
    ap.add_argument("--no-torch", action="store_true", help="do not compare with torch even if installed")
    return ap


def main(argv: Optional[list] = None) -> int:
    """Run the demo; returns the exit status (0 on success)."""
    args = _parser().parse_args(argv)
    import fastrnn

    out = sys.stdout
    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F811
        except ImportError:
            torch = None
    if args.tokens < 1 or args.horizon < 1 or args.context < 1:
        print("fastrnn demo: error: --tokens, --horizon and --context must be >= 1", file=sys.stderr)
        return 2
    print(f"fastrnn {fastrnn.__version__} demo  (kernels: {fastrnn.get_isa()}, "
          f"{fastrnn.get_num_threads()} threads; torch: {torch.__version__ if torch else 'not used'})", file=out)

    # -- 1. language model ------------------------------------------------------------------
    lm, meta = load_bundled("char_lm")
    vocab = json.loads(meta["vocab"])
    stoi = {c: i for i, c in enumerate(vocab)}
    try:
        ids = _encode(args.prompt, stoi)[None]
    except ValueError as exc:
        print(f"fastrnn demo: error: {exc}", file=sys.stderr)
        return 2
    if ids.shape[1] == 0:
        print("fastrnn demo: error: the prompt is empty", file=sys.stderr)
        return 2
    n_params = lm.parameters_count()
    print(f"\n[1] Character-level language model: {_arch(lm)}", file=out)
    print(f"    {n_params / 1e6:.2f} M parameters, vocabulary of {len(vocab)} characters; trained on public-domain "
          f"US documents (examples/data/)", file=out)
    greedy = lm.generate(ids, args.tokens, temperature=0)
    sampled = lm.generate(ids, args.tokens, temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    text = lambda row: "".join(vocab[i] for i in row)  # noqa: E731
    P = ids.shape[1]
    print(f"    prompt: {args.prompt!r}", file=out)
    print("    greedy (temperature 0):", file=out)
    for line in (args.prompt + text(greedy[0, P:])).splitlines() or [""]:
        print(f"      | {line}", file=out)
    topk = f", top_k {args.top_k}" if args.top_k else ""
    print(f"    sampled (temperature {args.temperature}{topk}, seed {args.seed}):", file=out)
    for line in (args.prompt + text(sampled[0, P:])).splitlines() or [""]:
        print(f"      | {line}", file=out)
    tmods = None
    if torch is not None:
        tmods = _torch_lm(torch, lm)
        want = torch_generate_greedy(torch, tmods, ids, args.tokens)
        same = bool(np.array_equal(want, greedy))
        first = int(np.argmax(want[0] != greedy[0])) - P if not same else None
        print(f"    greedy generation matches torch token for token: {'yes' if same else 'NO'} "
              f"({args.tokens} tokens{'' if same else f'; first difference at new token {first}'})", file=out)

    # -- 2. forecaster ----------------------------------------------------------------------
    fc, _ = load_bundled("forecaster")
    noisy, clean = _heldout()
    C, Hz = args.context, args.horizon
    if C + Hz > len(noisy):
        print(f"fastrnn demo: error: --context + --horizon must be <= {len(noisy)} (the held-out series)",
              file=sys.stderr)
        return 2
    starts = np.arange(0, len(noisy) - C - Hz + 1, max(1, Hz))[:8]
    windows = np.stack([noisy[s:s + C] for s in starts])[..., None]  # (B, C, 1)
    truth = np.stack([noisy[s + C:s + C + Hz] for s in starts])
    truth_clean = np.stack([clean[s + C:s + C + Hz] for s in starts])
    pred = fc.forecast(windows, Hz)[..., 0]
    err = pred - truth
    rmse, mae = float(np.sqrt(np.mean(err ** 2))), float(np.mean(np.abs(err)))
    rmse_clean = float(np.sqrt(np.mean((pred - truth_clean) ** 2)))
    naive = windows[:, -1, 0][:, None]
    rmse_naive = float(np.sqrt(np.mean((naive - truth) ** 2)))
    std = float(np.std(truth))
    print(f"\n[2] Forecaster: {_arch(fc)}", file=out)
    print(f"    held-out series (never seen in training): {len(starts)} windows, {C}-step context, "
          f"{Hz}-step autoregressive forecast", file=out)
    print(f"    RMSE {rmse:.4f}  MAE {mae:.4f}  (vs the noisy truth; noise std 0.1; RMSE vs the noise-free "
          f"signal {rmse_clean:.4f})", file=out)
    print(f"    baselines: last value repeated RMSE {rmse_naive:.4f}; series std {std:.4f}", file=out)
    show = min(Hz, 10)
    print(f"    window 0, first {show} steps:", file=out)
    print("      truth    " + " ".join(f"{v:+.2f}" for v in truth[0, :show]), file=out)
    print("      forecast " + " ".join(f"{v:+.2f}" for v in pred[0, :show]), file=out)
    if torch is not None:
        fmods = _torch_forecaster(torch, fc)
        tpred = torch_forecast(torch, fmods, windows, Hz)[..., 0]
        print(f"    forecast vs torch loop: max |difference| {np.abs(tpred - pred).max():.1e}", file=out)

    # -- 3. throughput -------------------------------------------------------------------------
    if args.bench_time > 0:
        bt = args.bench_time
        print(f"\n[3] Throughput (best of repeats, ~{bt:g} s each; {fastrnn.get_num_threads()} threads"
              f"{f', torch {torch.get_num_threads()} threads' if torch is not None else ''})", file=out)
        rows = []
        n_new = 100
        for B in (1, 32):
            prompt = np.repeat(ids, B, axis=0)
            f_rate = _rate(lambda: lm.generate(prompt, n_new, temperature=0), B * n_new, bt)
            t_rate = (_rate(lambda: torch_generate_greedy(torch, tmods, prompt, n_new), B * n_new, bt)
                      if tmods is not None else None)
            rows.append((f"generation, batch {B:>2} (tokens/s)", f_rate, t_rate))
        T = 1000
        seq = np.resize(np.arange(len(vocab)), (8, T))
        f_rate = _rate(lambda: lm(seq if lm.batch_first else seq.T), 8 * T, bt)
        t_rate = None
        if tmods is not None:
            te, tr, tl = tmods
            xs = torch.from_numpy(seq if tr.batch_first else np.ascontiguousarray(seq.T))

            def tscore():
                with torch.no_grad():
                    return tl(tr(te(xs))[0])
            t_rate = _rate(tscore, 8 * T, bt)
        rows.append(("scoring, 8 x 1000 chars (tokens/s)", f_rate, t_rate))
        f_rate = _rate(lambda: fc.forecast(windows, Hz), len(starts) * Hz, bt)
        t_rate = (_rate(lambda: torch_forecast(torch, fmods, windows, Hz), len(starts) * Hz, bt)
                  if torch is not None else None)
        rows.append((f"forecast, batch {len(starts)} (steps/s)", f_rate, t_rate))
        w = max(len(r[0]) for r in rows)
        print(f"    {'':{w}}  {'fastrnn':>12}  {'torch':>12}  {'speed-up':>8}", file=out)
        for name, f_rate, t_rate in rows:
            if t_rate:
                print(f"    {name:{w}}  {f_rate:12,.0f}  {t_rate:12,.0f}  {f_rate / t_rate:7.1f}x", file=out)
            else:
                print(f"    {name:{w}}  {f_rate:12,.0f}  {'-':>12}  {'-':>8}", file=out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
