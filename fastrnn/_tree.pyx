# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Python boundary of the Tree-LSTM C core (csrc/tree.c).

Inputs are validated here once; then the whole forest is computed in C with
the GIL released. Its products run on _core's kernels and thread team
(frnn_gemm_packed, taken from _core once), on weights packed at load.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t
from cpython.pycapsule cimport PyCapsule_GetPointer

from . import _core

cnp.import_array()

cdef extern from "tree.h" nogil:
    ctypedef void (*frnn_tree_gemm_fn)(const float *wp, int N, int K, const float *A, int M, float *C,
                                       int nthreads)
    enum:
        FRNN_TREE_CHILDSUM, FRNN_TREE_BINARY
        FRNN_TREE_OK, FRNN_TREE_ENOMEM, FRNN_TREE_EINVAL, FRNN_TREE_EPARENT, FRNN_TREE_ECYCLE,
        FRNN_TREE_ECHILDREN

    ctypedef struct frnn_tree_net:
        int kind
        int input_size
        int hidden_size
        const float *w_x
        const float *b_x
        const float *u
        const float *b_f2
        const float *g_leaf
        const float *w_x_p
        const float *u_p
        const float *u_f_p

    void frnn_tree_leaf_g(const frnn_tree_net *net, float *g)
    int frnn_tree_depths(int64_t N, const int64_t *parent, int64_t *depth, int64_t *max_depth,
                         int64_t *err_node)
    int frnn_tree_forward(const frnn_tree_net *net, int64_t N, const float *x, const int64_t *parent,
                          float *h, float *c, frnn_tree_gemm_fn gemm, int nthreads, int64_t *err_node)

KINDS = {"childsum": FRNN_TREE_CHILDSUM, "binary": FRNN_TREE_BINARY}

cdef frnn_tree_gemm_fn _gemm = <frnn_tree_gemm_fn>PyCapsule_GetPointer(_core._gemm_capsule(),
                                                                       b"fastrnn._core.gemm_packed")


cdef inline const float *fptr(object a):
    if a is None:
        return NULL
    return <const float *>cnp.PyArray_DATA(<cnp.ndarray>a)


def check_parent(parent, Py_ssize_t n=-1):
    """``parent`` as a C-contiguous int64 vector (length ``n`` when n >= 0)."""
    a = np.asarray(parent)
    if a.size == 0 and a.dtype.kind == "f":  # [] parses as float64
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"parent must hold integers (node indices, -1 for roots), got dtype {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"parent must be 1-D (one entry per node), got shape {a.shape}")
    if n >= 0 and a.shape[0] != n:
        raise ValueError(f"parent has {a.shape[0]} entries but x has {n} nodes (rows)")
    if a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError("parent indices out of range")
    return np.ascontiguousarray(a, dtype=np.int64)


cdef _raise(int rc, int64_t node, parent, Py_ssize_t n, str what):
    if rc == FRNN_TREE_ENOMEM:
        raise MemoryError(f"fastrnn: cannot allocate working memory for a forest of {n} nodes")
    if rc == FRNN_TREE_EPARENT:
        raise ValueError(f"parent[{node}] = {int(parent[node])} is out of range: parent indices must be "
                         f"-1 (a root) or 0..{n - 1}")
    if rc == FRNN_TREE_ECYCLE:
        cyc = [int(node)]
        v = int(parent[node])
        while v != node and len(cyc) < 8:
            cyc.append(v)
            v = int(parent[v])
        more = " -> ..." if v != node else f" -> {int(node)}"
        raise ValueError(f"parent links form a cycle: {' -> '.join(map(str, cyc))}{more} "
                         f"(every chain of parents must end at a root, -1)")
    if rc == FRNN_TREE_ECHILDREN:
        kids = np.flatnonzero(np.asarray(parent) == node)
        raise ValueError(f"node {node} has {kids.size} children {kids[:6].tolist()}"
                         f"{'...' if kids.size > 6 else ''}; {what} accepts at most 2 per node")
    raise ValueError(f"fastrnn: invalid tree call (code {rc})")


def depths(parent):
    """Depth of every node (roots 0) of the forest given by ``parent``; ValueError on cycles or
    out-of-range parents."""
    p = check_parent(parent)
    cdef Py_ssize_t n = p.shape[0]
    cdef cnp.ndarray d = np.empty(n, dtype=np.int64)
    cdef int64_t mx = -1, err = -1
    cdef int rc
    cdef const int64_t *pp = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>p)
    cdef int64_t *dp = <int64_t *>cnp.PyArray_DATA(d)
    with nogil:
        rc = frnn_tree_depths(n, pp, dp, &mx, &err)
    if rc != FRNN_TREE_OK:
        _raise(rc, err, p, n, "this tree")
    return d


cdef class TreeNet:
    """Packed weights of one Tree-LSTM (immutable: any number of threads may share it)."""
    cdef frnn_tree_net net
    cdef list _keep
    cdef readonly str kind
    cdef readonly int input_size, hidden_size

    def __init__(self, str kind, int input_size, int hidden_size, w_x, b_x, u, b_f2=None):
        """w_x (4H, I), b_x (4H), u (4H, H) child-sum / (5H, 2H) binary, b_f2 (2H) binary only;
        all C-contiguous float32 (see csrc/tree.h)."""
        H = int(hidden_size)
        if kind not in KINDS:
            raise ValueError(f"internal: unknown tree kind {kind!r}")
        binary = kind == "binary"
        shapes = {"w_x": (4 * H, input_size), "b_x": (4 * H,),
                  "u": (5 * H, 2 * H) if binary else (4 * H, H)}
        if binary:
            shapes["b_f2"] = (2 * H,)
        arrs = {"w_x": w_x, "b_x": b_x, "u": u, "b_f2": b_f2}
        for key, shape in shapes.items():
            a = arrs[key]
            if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous
                    and a.shape == shape):
                raise TypeError(f"internal: {key} must be C-contiguous float32 of shape {shape}")
        self._keep = [w_x, b_x, u, b_f2]
        self.kind = kind
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.net.kind = KINDS[kind]
        self.net.input_size = input_size
        self.net.hidden_size = hidden_size
        self.net.w_x = fptr(w_x)
        self.net.b_x = fptr(b_x)
        self.net.u = fptr(u)
        self.net.b_f2 = fptr(b_f2) if binary else NULL
        # packed for _core's kernels: [ceil(N / 16)][K][16] blocks of W (N x K)
        packed = [_core.pack_whh(w_x, 1, 4 * H)]
        packed += [_core.pack_whh(u, 1, 5 * H)] if binary else [_core.pack_whh(u[:3 * H], 1, 3 * H),
                                                                 _core.pack_whh(u[3 * H:], 1, H)]
        self._keep += packed
        self.net.w_x_p = fptr(packed[0])
        self.net.u_p = fptr(packed[1])
        self.net.u_f_p = NULL
        if not binary:
            self.net.u_f_p = fptr(packed[2])
        g_leaf = np.empty((5 if binary else 4) * H, dtype=np.float32)
        frnn_tree_leaf_g(&self.net, <float *>cnp.PyArray_DATA(g_leaf))
        self._keep.append(g_leaf)
        self.net.g_leaf = fptr(g_leaf)

    def forward(self, x, parent):
        """h, c (N, H) for every node of the forest (x (N, I), parent (N,), -1 for roots)."""
        a = np.asarray(x)
        if a.dtype.kind != "f":
            raise TypeError(f"x must hold real floating-point numbers, got dtype {a.dtype}")
        if a.ndim != 2:
            raise ValueError(f"x must be 2-D (num_nodes, input_size={self.input_size}), got shape {a.shape}")
        if a.shape[1] != self.input_size:
            raise ValueError(f"x has {a.shape[1]} features per node, expected input_size={self.input_size}")
        cdef Py_ssize_t n = a.shape[0]
        if n > 2147483647:
            raise ValueError("a forest may hold at most 2**31 - 1 nodes")
        a = np.ascontiguousarray(a, dtype=np.float32)
        p = check_parent(parent, n)
        cdef cnp.ndarray h = np.empty((n, self.hidden_size), dtype=np.float32)
        cdef cnp.ndarray c = np.empty((n, self.hidden_size), dtype=np.float32)
        cdef int64_t err = -1
        cdef int rc
        cdef const float *xp = fptr(a)
        cdef const int64_t *pp = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>p)
        cdef float *hp = <float *>cnp.PyArray_DATA(h)
        cdef float *cp = <float *>cnp.PyArray_DATA(c)
        cdef int nthreads = _core.get_num_threads()
        with nogil:
            rc = frnn_tree_forward(&self.net, n, xp, pp, hp, cp, _gemm, nthreads, &err)
        if rc != FRNN_TREE_OK:
            _raise(rc, err, p, n, "BinaryTreeLSTM" if self.kind == "binary" else "this tree")
        return h, c
