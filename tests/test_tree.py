"""Tree-LSTMs (fastrnn.tree) against a plain recursive numpy reference (float64)."""
import pickle
import threading

import numpy as np
import pytest

from fastrnn.models import load_model, save_model
from fastrnn.tree import BinaryTreeLSTM, ChildSumTreeLSTM, tree_depths

ATOL = 2e-5


# ------------------------------------------------------------------------------ reference
def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def reference(params, x, parent, binary):
    """Recursive definition of the Tree-LSTM (children visited before their parent), float64.

    The recursion is unrolled into an explicit post-order so deep chains need no recursion limit.
    """
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    x = np.asarray(x, dtype=np.float64)
    parent = np.asarray(parent)
    N = len(parent)
    H = p["fx.bias"].shape[0]
    kids = [[] for _ in range(N)]
    for i in range(N):  # ascending node index: children lists in index order
        if parent[i] >= 0:
            kids[parent[i]].append(i)
    h = np.zeros((N, H))
    c = np.zeros((N, H))

    def node(v):
        xv = x[v]
        if binary:
            hc = np.zeros(2 * H)
            cs = [np.zeros(H), np.zeros(H)]
            for pos, k in enumerate(kids[v]):
                hc[pos * H:(pos + 1) * H] = h[k]
                cs[pos] = c[k]
            iou = p["ioux.weight"] @ xv + p["ioux.bias"] + p["iouh.weight"] @ hc + p["iouh.bias"]
            f = _sig(np.tile(p["fx.weight"] @ xv + p["fx.bias"], 2) + p["fh.weight"] @ hc + p["fh.bias"])
            i, o, u = _sig(iou[:H]), _sig(iou[H:2 * H]), np.tanh(iou[2 * H:])
            c[v] = i * u + f[:H] * cs[0] + f[H:] * cs[1]
        else:
            hsum = np.zeros(H)
            for k in kids[v]:
                hsum += h[k]
            iou = p["ioux.weight"] @ xv + p["ioux.bias"] + p["iouh.weight"] @ hsum + p["iouh.bias"]
            i, o, u = _sig(iou[:H]), _sig(iou[H:2 * H]), np.tanh(iou[2 * H:])
            cv = i * u
            # a leaf has one zero child, as in the reference implementation: its term is 0
            # unless the forget gate is NaN
            for hk, ck in [(h[k], c[k]) for k in kids[v]] or [(np.zeros(H), np.zeros(H))]:
                cv = cv + _sig(p["fx.weight"] @ xv + p["fx.bias"] + p["fh.weight"] @ hk + p["fh.bias"]) * ck
            c[v] = cv
        h[v] = o * np.tanh(c[v])

    for r in np.flatnonzero(parent < 0):
        stack = [(int(r), False)]
        while stack:
            v, done = stack.pop()
            if done:
                node(v)
            else:
                stack.append((v, True))
                stack.extend((k, False) for k in kids[v])
    return h, c


def random_forest(rng, n, binary, root_prob=0.1):
    """Random forest over n nodes in a random order (parents may follow their children)."""
    parent = np.full(n, -1, dtype=np.int64)
    order = rng.permutation(n)
    nkids = np.zeros(n, dtype=np.int64)
    for j in range(1, n):
        if rng.random() < root_prob:
            continue
        cands = order[:j]
        if binary:
            cands = cands[nkids[cands] < 2]
            if cands.size == 0:
                continue
        q = int(rng.choice(cands))
        parent[order[j]] = q
        nkids[q] += 1
    return parent


def check(model, x, parent):
    h, c = model(x, parent)
    hr, cr = reference(model.state_dict(), x, parent, isinstance(model, BinaryTreeLSTM))
    assert h.dtype == np.float32 and c.dtype == np.float32
    assert h.shape == c.shape == (len(parent), model.hidden_size)
    np.testing.assert_allclose(h, hr, atol=ATOL, rtol=0)
    np.testing.assert_allclose(c, cr, atol=ATOL * 10, rtol=1e-5)
    return h, c


CLASSES = [ChildSumTreeLSTM, BinaryTreeLSTM]
IDS = ["childsum", "binary"]


# ------------------------------------------------------------------------------ numerics
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("seed", range(12))
def test_random_forests(cls, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 120))
    I, H = int(rng.integers(1, 12)), int(rng.integers(1, 40))
    parent = random_forest(rng, n, cls is BinaryTreeLSTM, root_prob=float(rng.choice([0.0, 0.05, 0.3])))
    m = cls(I, H, seed=seed)
    x = rng.standard_normal((n, I)).astype(np.float32)
    check(m, x, parent)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the reference's 0 * inf
@pytest.mark.parametrize("cls, where", [(ChildSumTreeLSTM, "iouh"), (ChildSumTreeLSTM, "fh"),
                                        (ChildSumTreeLSTM, "x"),
                                        (BinaryTreeLSTM, "iouh"), (BinaryTreeLSTM, "fh_left"),
                                        (BinaryTreeLSTM, "fh_right"), (BinaryTreeLSTM, "x")],
                         ids=["childsum-iouh", "childsum-fh", "childsum-x", "binary-iouh", "binary-fh_left",
                              "binary-fh_right", "binary-x"])
def test_nonfinite_weights_and_inputs(cls, where):
    """A leaf's recurrent term is u times zero children, a Child-Sum leaf's one zero child
    and a binary node's missing child add their forget gate times a zero cell state: 0 * inf
    is NaN, so with an inf in u (or an inf input making a forget gate inf - inf) the NaN
    pattern is the reference's."""
    rng = np.random.default_rng(5)
    H = 6
    m = cls(3, H, seed=1)
    binary = cls is BinaryTreeLSTM
    sd = m.state_dict()
    x = rng.standard_normal((40, 3)).astype(np.float32)
    if where == "iouh":
        sd["iouh.weight"][H + 2, 0] = np.inf   # output gate of unit 2, from (left) child unit 0
    elif where == "fh":
        sd["fh.weight"][1, 4] = np.inf          # unit 1's forget gate, from the child's unit 4
    elif where.startswith("fh"):
        # the forget gate of unit 1 (left / right position), from the right child's unit 4
        sd["fh.weight"][(H if where == "fh_right" else 0) + 1, H + 4] = np.inf
    else:
        sd["fx.weight"][3] = [np.inf, -np.inf, 0.0]   # unit 3's forget gates: inf - inf
        x[:, :2] = 1.0
    m.load_state_dict(sd)
    parent = random_forest(rng, 40, binary)
    h, c = check(m, x, parent)
    assert np.isnan(h).any(), "no NaN reached the output: the case tests nothing"


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_single_node_and_all_roots(cls):
    rng = np.random.default_rng(1)
    m = cls(5, 7, seed=3)
    x = rng.standard_normal((1, 5)).astype(np.float32)
    h, c = check(m, x, [-1])
    # a leaf: c = i * u, h = o * tanh(c), with iouh.bias counted (zero children)
    sd = m.state_dict()
    iou = sd["ioux.weight"] @ x[0] + sd["ioux.bias"] + sd["iouh.bias"]
    i, o, u = _sig(iou[:7]), _sig(iou[7:14]), np.tanh(iou[14:])
    np.testing.assert_allclose(c[0], i * u, atol=1e-6)
    np.testing.assert_allclose(h[0], o * np.tanh(i * u), atol=1e-6)
    # a forest of single-node trees: each row is that node alone
    xs = rng.standard_normal((50, 5)).astype(np.float32)
    hs, _ = check(m, xs, np.full(50, -1))
    np.testing.assert_allclose(hs[17], m(xs[17:18], [-1])[0][0], atol=1e-6)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_deep_chain(cls):
    """A 3000-deep chain (one node per level), given leaf-to-root and shuffled."""
    rng = np.random.default_rng(2)
    n = 3000
    m = cls(4, 6, seed=0)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    parent = np.arange(1, n + 1, dtype=np.int64)
    parent[-1] = -1
    check(m, x, parent)
    assert tree_depths(parent)[0] == n - 1
    perm = rng.permutation(n)
    inv = np.argsort(perm)
    p2 = np.where(parent[perm] >= 0, inv[np.maximum(parent[perm], 0)], -1)
    h2, _ = check(m, x[perm], p2)
    np.testing.assert_allclose(h2, m(x, parent)[0][perm], atol=1e-6)


def test_childsum_wide_and_permutation_invariant():
    rng = np.random.default_rng(3)
    n = 400
    m = ChildSumTreeLSTM(3, 9, seed=1)
    parent = np.zeros(n, dtype=np.int64)
    parent[0] = -1  # a root with 399 children
    x = rng.standard_normal((n, 3)).astype(np.float32) * 0.3
    h, c = check(m, x, parent)
    # any relabelling of the nodes permutes the outputs (children are unordered)
    parent = random_forest(rng, 200, binary=False)
    x = rng.standard_normal((200, 3)).astype(np.float32)
    h, c = m(x, parent)
    perm = rng.permutation(200)
    inv = np.argsort(perm)
    p2 = np.where(parent[perm] >= 0, inv[np.maximum(parent[perm], 0)], -1)
    h2, c2 = m(x[perm], p2)
    np.testing.assert_allclose(h2, h[perm], atol=1e-6)
    np.testing.assert_allclose(c2, c[perm], atol=1e-6)


def test_binary_child_order_is_node_index_order():
    """Left child = the child with the smaller node index; swapping the labels swaps them."""
    m = BinaryTreeLSTM(2, 5, seed=4)
    x = np.array([[0.5, -1.0], [1.0, 2.0], [-0.3, 0.7]], dtype=np.float32)
    h, c = check(m, x, [-1, 0, 0])  # node 1 left, node 2 right
    xs = x[[0, 2, 1]]  # relabel: the old right child is now node 1 (left)
    hs, _ = check(m, xs, [-1, 0, 0])
    assert not np.allclose(hs[0], h[0])
    # one child only: it is the left child (right slot zeros)
    h1, c1 = check(m, x[:2], [-1, 0])
    sd = m.state_dict()
    hl, cl = h1[1], c1[1]
    hc = np.concatenate([hl, np.zeros(5)])
    f_left = _sig(sd["fx.weight"] @ x[0] + sd["fx.bias"] + sd["fh.weight"][:5] @ hc + sd["fh.bias"][:5])
    iou = sd["ioux.weight"] @ x[0] + sd["ioux.bias"] + sd["iouh.weight"] @ hc + sd["iouh.bias"]
    np.testing.assert_allclose(c1[0], _sig(iou[:5]) * np.tanh(iou[10:]) + f_left * cl, atol=1e-5)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_large_forest_levels(cls):
    """Many trees of different depths in one call: levels are shared across the forest."""
    rng = np.random.default_rng(5)
    parts, xs, base = [], [], 0
    for t in range(40):
        n = int(rng.integers(1, 40))
        p = random_forest(rng, n, cls is BinaryTreeLSTM, root_prob=0.0)
        parts.append(np.where(p >= 0, p + base, -1))
        xs.append(rng.standard_normal((n, 6)).astype(np.float32))
        base += n
    parent = np.concatenate(parts)
    x = np.concatenate(xs)
    m = cls(6, 33, seed=2)
    h, _ = check(m, x, parent)
    # each tree alone gives the same rows
    off = 0
    for p, xt in zip(parts[:5], xs[:5]):
        ht, _ = m(xt, np.where(p >= 0, p - off, -1))
        np.testing.assert_allclose(ht, h[off:off + len(p)], atol=1e-6)
        off += len(p)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_products_on_fastrnns_threads(cls):
    """Products big enough for the thread team (H = 150: 3H, 5H and 4H outputs end in a
    partial block of 16): levels of 16-63 inner nodes split W's blocks over the threads,
    the input projection of all nodes (and levels of 64+) splits the rows. Each thread
    count matches the reference, the two agree within 1e-6, and the forest's levels
    really are of both kinds."""
    import fastrnn
    rng = np.random.default_rng(11)
    parts, base = [], 0
    for t in range(90):
        n = int(rng.integers(8, 30))
        p = random_forest(rng, n, cls is BinaryTreeLSTM, root_prob=0.0)
        parts.append(np.where(p >= 0, p + base, -1))
        base += n
    parent = np.concatenate(parts)
    depth = tree_depths(parent)
    inner = np.bincount(depth[parent[parent >= 0]])
    assert inner.max() >= 64 and ((inner >= 16) & (inner < 64)).any()
    x = rng.standard_normal((len(parent), 64)).astype(np.float32)
    m = cls(64, 150, seed=4)
    old = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(1)
        h1, c1 = check(m, x, parent)
        fastrnn.set_num_threads(2)
        h2, c2 = check(m, x, parent)
    finally:
        fastrnn.set_num_threads(old)
    assert np.max(np.abs(h1 - h2)) <= 1e-6 and np.max(np.abs(c1 - c2)) <= 1e-6


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_empty_forest_and_input_forms(cls):
    m = cls(3, 4, seed=0)
    h, c = m(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
    assert h.shape == c.shape == (0, 4)
    h, c = m(np.zeros((0, 3)), [])
    assert h.shape == (0, 4)
    # float64 / Fortran-ordered x and int32 / list parents are accepted
    rng = np.random.default_rng(0)
    x = np.asfortranarray(rng.standard_normal((5, 3)))
    a = m(x, [1, -1, 1, 0, 0])[0]
    b = m(np.ascontiguousarray(x, dtype=np.float32), np.array([1, -1, 1, 0, 0], dtype=np.int32))[0]
    np.testing.assert_array_equal(a, b)


def test_depths():
    assert tree_depths([-1]).tolist() == [0]
    assert tree_depths([2, 2, -1, 0]).tolist() == [1, 1, 0, 2]
    assert tree_depths(np.zeros(0, np.int64)).tolist() == []


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
@pytest.mark.parametrize("parent, match", [
    ([0], "cycle"),                       # self loop
    ([1, 0, -1], "cycle"),                # 2-cycle
    ([-1, 2, 3, 4, 1], "cycle"),          # longer cycle off a root
    ([-1, 5, 0], "out of range"),
    ([-1, -2, 0], "out of range"),
    ([-1, 3], "out of range"),
])
def test_bad_parents(cls, parent, match):
    m = cls(2, 3, seed=0)
    x = np.zeros((len(parent), 2), np.float32)
    with pytest.raises(ValueError, match=match):
        m(x, parent)
    with pytest.raises(ValueError, match=match):
        tree_depths(parent)


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_bad_shapes_and_types(cls):
    m = cls(2, 3, seed=0)
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match="2-D"):
        m(np.zeros(3, np.float32), [-1, 0, 0])
    with pytest.raises(ValueError, match="features per node"):
        m(np.zeros((3, 5), np.float32), [-1, 0, 0])
    with pytest.raises(ValueError, match="entries but x has"):
        m(x, [-1, 0])
    with pytest.raises(ValueError, match="1-D"):
        m(x, [[-1, 0, 0]])
    with pytest.raises(TypeError, match="integers"):
        m(x, [-1.0, 0.0, 0.0])
    with pytest.raises(TypeError, match="floating"):
        m(x.astype(np.int64), [-1, 0, 0])
    with pytest.raises(TypeError):
        cls(2.5, 3)
    with pytest.raises(ValueError):
        cls(2, 0)


def test_binary_too_many_children():
    m = BinaryTreeLSTM(2, 3, seed=0)
    with pytest.raises(ValueError, match="node 0 has 3 children"):
        m(np.zeros((4, 2), np.float32), [-1, 0, 0, 0])
    # fine for Child-Sum
    ChildSumTreeLSTM(2, 3, seed=0)(np.zeros((4, 2), np.float32), [-1, 0, 0, 0])


# ------------------------------------------------------------------------------ parameters, files, threads
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_state_dict_roundtrip_and_strictness(cls, tmp_path):
    m = cls(4, 5, seed=7)
    sd = m.state_dict()
    H = 5
    A = 2 if cls is BinaryTreeLSTM else 1
    assert {k: v.shape for k, v in sd.items()} == {
        "ioux.weight": (3 * H, 4), "ioux.bias": (3 * H,), "iouh.weight": (3 * H, A * H), "iouh.bias": (3 * H,),
        "fx.weight": (H, 4), "fx.bias": (H,), "fh.weight": (A * H, A * H), "fh.bias": (A * H,)}
    m2 = cls(4, 5, seed=8).load_state_dict(sd)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    parent = [-1, 0, 0, 1, 1, 2]
    np.testing.assert_array_equal(m(x, parent)[0], m2(x, parent)[0])
    with pytest.raises(ValueError, match="missing"):
        m2.load_state_dict({k: v for k, v in sd.items() if k != "fh.bias"})
    with pytest.raises(ValueError, match="unexpected"):
        m2.load_state_dict({**sd, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="size mismatch"):
        m2.load_state_dict({**sd, "fx.weight": np.zeros((5, 3))})
    # pickling and the model file
    m3 = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(m(x, parent)[0], m3(x, parent)[0])
    save_model(m, tmp_path / "tree.safetensors")
    m4 = load_model(tmp_path / "tree.safetensors")
    assert type(m4) is cls and repr(m4) == repr(m)
    np.testing.assert_array_equal(m(x, parent)[0], m4(x, parent)[0])


def test_seeded_init_is_reproducible():
    a = ChildSumTreeLSTM(3, 4, seed=11).state_dict()
    b = ChildSumTreeLSTM(3, 4, seed=11).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    bound = 1 / np.sqrt(3)
    assert np.abs(a["ioux.weight"]).max() <= bound and np.abs(a["fh.weight"]).max() <= 1 / np.sqrt(4)


def test_threads_share_one_model():
    rng = np.random.default_rng(9)
    m = ChildSumTreeLSTM(8, 32, seed=0)
    jobs = []
    for t in range(8):
        parent = random_forest(rng, 300, binary=False)
        x = rng.standard_normal((300, 8)).astype(np.float32)
        jobs.append((x, parent, m(x, parent)[0]))
    errors = []

    def work(i):
        x, parent, want = jobs[i]
        for _ in range(5):
            if not np.array_equal(m(x, parent)[0], want):
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


# ------------------------------------------------------------------------------ torch
def _torch_childsum(torch, I, H):
    nn = torch.nn

    class ChildSumTreeLSTM_(nn.Module):  # treelstm.pytorch's ChildSumTreeLSTM (node_forward)
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

        def forward(self, kids, v, inputs, hs, cs):  # recursive, as in the reference code
            for k in kids[v]:
                self.forward(kids, k, inputs, hs, cs)
            if not kids[v]:
                child_c = child_h = torch.zeros(1, H)
            else:
                child_c = torch.cat([cs[k] for k in kids[v]])
                child_h = torch.cat([hs[k] for k in kids[v]])
            cs[v], hs[v] = self.node_forward(inputs[v:v + 1], child_c, child_h)

    return ChildSumTreeLSTM_()


def test_childsum_matches_the_pytorch_implementation():
    torch = pytest.importorskip("torch")
    from fastrnn.models import from_torch_module

    torch.manual_seed(0)
    I, H = 7, 11
    tm = _torch_childsum(torch, I, H)
    m = from_torch_module(tm)
    assert isinstance(m, ChildSumTreeLSTM)
    rng = np.random.default_rng(0)
    parent = random_forest(rng, 60, binary=False)
    x = rng.standard_normal((60, I)).astype(np.float32)
    kids = [[] for _ in range(60)]
    for i, q in enumerate(parent):
        if q >= 0:
            kids[q].append(i)
    hs, cs = {}, {}
    with torch.no_grad():
        for r in np.flatnonzero(parent < 0):
            tm(kids, int(r), torch.from_numpy(x), hs, cs)
    ht = torch.cat([hs[i] for i in range(60)]).numpy()
    ct = torch.cat([cs[i] for i in range(60)]).numpy()
    h, c = m(x, parent)
    np.testing.assert_allclose(h, ht, atol=1e-5)
    np.testing.assert_allclose(c, ct, atol=1e-5)
