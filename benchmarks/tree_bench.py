"""Tree-LSTM throughput: fastrnn (level-batched, C) vs a per-node torch loop.

Run: ``python benchmarks/tree_bench.py [--trees 256] [--words 20] [--input 300] [--hidden 150]``

The torch side is the usual PyTorch Tree-LSTM (treelstm.pytorch's ``ChildSumTreeLSTM``
``node_forward``, and its binary analogue), run node by node in post-order under
``torch.no_grad()``, which is how such models are commonly evaluated. Forests: sentences of
``--words`` words; Child-Sum trees are random dependency-like trees (each word's head is a
random other word of the sentence, acyclic), binary trees are random binary parses
(2 * words - 1 nodes). Reports nodes/s (median of repeats) and checks that both sides agree.
fastrnn's products run on its own thread team: ``--threads 1`` gives single-thread numbers.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastrnn  # noqa: E402
from fastrnn.tree import BinaryTreeLSTM, ChildSumTreeLSTM  # noqa: E402


def dependency_forest(rng, trees, words):
    """Random dependency-like trees: node j > 0 of a sentence hangs under a random earlier node
    (then the sentence is shuffled, so parents may come after their children)."""
    parent = []
    base = 0
    for _ in range(trees):
        p = np.full(words, -1)
        for j in range(1, words):
            p[j] = rng.integers(0, j)
        perm = rng.permutation(words)
        inv = np.argsort(perm)
        q = np.where(p[perm] >= 0, inv[np.maximum(p[perm], 0)], -1)
        parent.extend((q + base * (q >= 0)).tolist())
        base += words
    return np.asarray(parent, dtype=np.int64)


def binary_forest(rng, trees, words):
    """Random binary parses: repeatedly merge two adjacent constituents."""
    parent = []
    base = 0
    for _ in range(trees):
        p = [-1] * (2 * words - 1)
        spans = list(range(words))
        nxt = words
        while len(spans) > 1:
            j = int(rng.integers(len(spans) - 1))
            p[spans[j]] = nxt
            p[spans[j + 1]] = nxt
            spans[j:j + 2] = [nxt]
            nxt += 1
        parent.extend(v + base if v >= 0 else -1 for v in p)
        base += 2 * words - 1
    return np.asarray(parent, dtype=np.int64)


def postorder(parent):
    """Node indices, children before parents (the order a recursive implementation visits)."""
    kids = [[] for _ in range(len(parent))]
    for i, q in enumerate(parent):
        if q >= 0:
            kids[q].append(i)
    order = []
    for r in np.flatnonzero(parent < 0):
        stack = [(int(r), False)]
        while stack:
            v, done = stack.pop()
            if done:
                order.append(v)
                continue
            stack.append((v, True))
            stack.extend((k, False) for k in reversed(kids[v]))
    return order, kids


def torch_modules(torch, I, H):
    nn = torch.nn

    class TorchChildSumTreeLSTM(nn.Module):
        """treelstm.pytorch's ChildSumTreeLSTM.node_forward."""

        def __init__(self):
            super().__init__()
            self.ioux = nn.Linear(I, 3 * H)
            self.iouh = nn.Linear(H, 3 * H)
            self.fx = nn.Linear(I, H)
            self.fh = nn.Linear(H, H)

        def node_forward(self, inputs, child_c, child_h):
            child_h_sum = torch.sum(child_h, dim=0, keepdim=True)
            iou = self.ioux(inputs) + self.iouh(child_h_sum)
            i, o, u = torch.split(iou, iou.size(1) // 3, dim=1)
            i, o, u = torch.sigmoid(i), torch.sigmoid(o), torch.tanh(u)
            f = torch.sigmoid(self.fh(child_h) + self.fx(inputs).repeat(len(child_h), 1))
            fc = torch.mul(f, child_c)
            c = torch.mul(i, u) + torch.sum(fc, dim=0, keepdim=True)
            h = torch.mul(o, torch.tanh(c))
            return c, h

    class TorchBinaryTreeLSTM(nn.Module):
        """The binary (N = 2) analogue with fastrnn's parameter layout."""

        def __init__(self):
            super().__init__()
            self.ioux = nn.Linear(I, 3 * H)
            self.iouh = nn.Linear(2 * H, 3 * H)
            self.fx = nn.Linear(I, H)
            self.fh = nn.Linear(2 * H, 2 * H)

        def node_forward(self, inputs, child_c, child_h):
            hc = child_h.reshape(1, 2 * H)
            iou = self.ioux(inputs) + self.iouh(hc)
            i, o, u = torch.split(iou, H, dim=1)
            i, o, u = torch.sigmoid(i), torch.sigmoid(o), torch.tanh(u)
            f = torch.sigmoid(self.fx(inputs).repeat(1, 2) + self.fh(hc)).reshape(2, H)
            c = i * u + torch.sum(f * child_c, dim=0, keepdim=True)
            h = o * torch.tanh(c)
            return c, h

    return TorchChildSumTreeLSTM, TorchBinaryTreeLSTM


def torch_forest(torch, mod, x, parent, binary, H):
    """Per-node loop over the forest, children first; returns h (N, H)."""
    order, kids = postorder(parent)
    hs, cs = [None] * len(parent), [None] * len(parent)
    zeros = torch.zeros(1, H)
    with torch.no_grad():
        for v in order:
            ks = kids[v]
            if binary:
                ch = [hs[k] for k in ks] + [zeros] * (2 - len(ks))
                cc = [cs[k] for k in ks] + [zeros] * (2 - len(ks))
                child_h, child_c = torch.cat(ch), torch.cat(cc)
            elif ks:
                child_h = torch.cat([hs[k] for k in ks])
                child_c = torch.cat([cs[k] for k in ks])
            else:
                child_h = child_c = zeros
            cs[v], hs[v] = mod.node_forward(x[v:v + 1], child_c, child_h)
    return torch.cat(hs)


def timeit(fn, repeat, min_time=0.2):
    times = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_time:
                break
        times.append(dt / n)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", type=int, default=256)
    ap.add_argument("--words", type=int, default=20)
    ap.add_argument("--input", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=150)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--torch-trees", type=int, default=16, help="trees in the (slow) torch loop")
    ap.add_argument("--threads", type=int, default=None,
                    help="fastrnn threads (default: fastrnn's own default, the CPUs it may use)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads (default 1: per-node ops are tiny, and more threads "
                         "only spin against each other on a small machine)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    I, H = args.input, args.hidden
    if args.threads is not None:
        fastrnn.set_num_threads(args.threads)
    try:
        import torch
        torch.set_num_threads(args.torch_threads)
    except ImportError:
        torch = None
    print(f"fastrnn {fastrnn.__version__} ({fastrnn.get_num_threads()} threads), {os.cpu_count()} CPUs; torch {torch.__version__ if torch else '-'}"
          f" ({torch.get_num_threads() if torch else '-'} threads); input {I}, hidden {H}, "
          f"{args.words}-word sentences")
    rows = []
    for kind, cls, forest in (("child-sum", ChildSumTreeLSTM, dependency_forest),
                              ("binary", BinaryTreeLSTM, binary_forest)):
        binary = kind == "binary"
        parent = forest(rng, args.trees, args.words)
        N = len(parent)
        depth = fastrnn.tree.tree_depths(parent).max() + 1
        m = cls(I, H, seed=0)
        x = rng.standard_normal((N, I)).astype(np.float32)
        t_f = timeit(lambda: m(x, parent), args.repeat)
        row = {"kind": kind, "trees": args.trees, "nodes": N, "levels": int(depth),
               "fastrnn_nodes_s": N / t_f}
        if torch is not None:
            tcls = torch_modules(torch, I, H)[binary]
            tm = tcls()
            tm.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
            tparent = forest(np.random.default_rng(1), args.torch_trees, args.words)
            tN = len(tparent)
            tx = rng.standard_normal((tN, I)).astype(np.float32)
            xt = torch.from_numpy(tx)
            ht = torch_forest(torch, tm, xt, tparent, binary, H).numpy()
            hf, _ = m(tx, tparent)
            err = float(np.abs(ht - hf).max())
            assert err < 1e-4, f"{kind}: fastrnn and torch differ by {err}"
            t_t = timeit(lambda: torch_forest(torch, tm, xt, tparent, binary, H), max(1, args.repeat // 2))
            row.update(torch_nodes_s=tN / t_t, max_abs_diff=err)
        rows.append(row)
        msg = (f"{kind:9s}: {N} nodes in {args.trees} trees, {depth} levels: fastrnn "
               f"{row['fastrnn_nodes_s']:,.0f} nodes/s")
        if "torch_nodes_s" in row:
            msg += (f"; torch per-node loop {row['torch_nodes_s']:,.0f} nodes/s "
                    f"-> x{row['fastrnn_nodes_s'] / row['torch_nodes_s']:.0f} (max |diff| {row['max_abs_diff']:.1e})")
        print(msg)
    return rows


if __name__ == "__main__":
    main()
