# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The boundary between Python and the C core.

Everything a call needs is validated here, once, with messages that name the
expected and actual sizes; arrays are converted to C-contiguous float32 at
most once; then the whole forward pass runs in C with the GIL released. No
math happens in this file.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
from cpython.pycapsule cimport PyCapsule_New

from fastrnn._core cimport *

cnp.import_array()

CELL_IDS = {"RNN": FRNN_RNN, "LSTM": FRNN_LSTM, "GRU": FRNN_GRU}
GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
# Steps of the batch-1 call whose working memory a Net touches when built.
RESERVE_STEPS = 128

ISA_NAMES = ("scalar", "avx2", "avx512")


def isa_supported(name):
    """Whether this CPU can run the kernels of ISA ``name``."""
    return name in ISA_NAMES and bool(frnn_isa_supported(ISA_NAMES.index(name)))


def get_isa():
    """Name of the kernel ISA in use."""
    return frnn_isa_name(frnn_get_isa()).decode()


def set_isa(name):
    """Force the kernel ISA (``scalar``, ``avx2`` or ``avx512``)."""
    if name not in ISA_NAMES:
        raise ValueError(f"unknown ISA {name!r}; expected one of {ISA_NAMES}")
    if frnn_set_isa(ISA_NAMES.index(name)) != 0:
        raise ValueError(f"ISA {name!r} is not supported by this CPU")


PARALLEL_MODES = ("auto", "hidden", "batch")


def set_parallel(str mode):
    """How the threads split a recurrent layer: "auto" (per call), "hidden" (each
    thread a slice of the hidden units, one barrier per step) or "batch" (each
    thread its own rows, independent time loops). For tests and tuning; the
    environment variable FASTRNN_PARALLEL sets it at import."""
    if mode not in PARALLEL_MODES:
        raise ValueError(f"parallel mode must be one of {PARALLEL_MODES}, got {mode!r}")
    frnn_set_parallel(PARALLEL_MODES.index(mode))


def get_parallel():
    """The parallel mode set by set_parallel."""
    return PARALLEL_MODES[frnn_get_parallel()]


PROJECTION_MODES = ("auto", "upfront", "step")


def set_projection(str mode):
    """Where a layer's input projection runs: "auto" (per call), "upfront" (one
    product over all steps before the time loop) or "step" (each step adds its own
    rows' product into the recurrent one, for float32 LSTM (without projection) and
    RNN layers whose sequences all have the same length; the others stay upfront).
    For tests and tuning; the environment variable FASTRNN_PROJECTION sets it at
    import."""
    if mode not in PROJECTION_MODES:
        raise ValueError(f"projection mode must be one of {PROJECTION_MODES}, got {mode!r}")
    frnn_set_xproj(PROJECTION_MODES.index(mode))


def get_projection():
    """The projection mode set by set_projection."""
    return PROJECTION_MODES[frnn_get_xproj()]


MAX_THREADS = FRNN_MAX_THREADS


def set_num_threads(n):
    """Set the default number of threads of every layer (at least 1; more than
    MAX_THREADS runs MAX_THREADS)."""
    n = check_num_threads(n, "number of threads")
    frnn_set_num_threads(n)


def check_num_threads(n, str what):
    """``n`` as a thread count in 1..MAX_THREADS (larger ones clamped); TypeError or
    ValueError naming ``what`` otherwise."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{what} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{what} must be >= 1, got {n}")
    return int(min(n, FRNN_MAX_THREADS))


def get_num_threads():
    """The default number of threads of every layer."""
    return frnn_get_num_threads()


def release_memory():
    """Free the working memory fastrnn keeps between calls.

    Each thread that calls a layer keeps the working memory of its largest call
    so far for its next call (a fresh block would be page-faulted in every time),
    until the thread exits. This frees what every thread keeps, except where a
    call is running; the next call allocates again.

    Returns
    -------
    int
        The number of bytes freed.
    """
    cdef size_t n
    with nogil:
        n = frnn_release_memory()
    return n


def apply_activation(int kind, float alpha, float beta, x):
    """Apply activation ``kind`` to a float32 copy of ``x`` with the current ISA (for tests).

    Besides the ONNX activation ids, 100 and 101 select the gate kernels' own
    tanh (2 sigmoid(2x) - 1) and their interleaved sigmoid.
    """
    cdef cnp.ndarray a = np.array(x, dtype=np.float32, copy=True, order="C")
    cdef frnn_act act
    act.kind = kind
    act.alpha = alpha
    act.beta = beta
    if (kind < 0 or kind >= FRNN_ACT_COUNT) and kind not in (FRNN_ACT_GATE_TANH, FRNN_ACT_GATE_SIGMOID):
        raise ValueError(f"unknown activation id {kind}")
    cdef int n = a.size
    with nogil:
        frnn_apply_act(&act, <float *>cnp.PyArray_DATA(a), n)
    return a


cdef inline const float *fptr(object a):
    if a is None:
        return NULL
    return <const float *>cnp.PyArray_DATA(<cnp.ndarray>a)


def untorch(x):
    """A torch tensor as its values (detached from autograd, on the CPU, bfloat16 as
    float32: numpy has no bfloat16); anything else unchanged."""
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return x


def as_float32(x, str what):
    """``x`` as a C-contiguous float32 array; TypeError for non-real-float data.
    A torch tensor is taken as its values (see untorch)."""
    if type(x).__name__ == "PackedSequence":
        raise TypeError(f"{what}: a PackedSequence is not taken; pass the padded array "
                        "(torch.nn.utils.rnn.pad_packed_sequence) and lengths= instead")
    a = np.asarray(untorch(x))
    kind = a.dtype.kind
    if kind != "f":
        raise TypeError(f"{what} must hold real floating-point numbers, got dtype {a.dtype}")
    return np.asarray(a, dtype=np.float32, order="C")   # (ascontiguousarray makes a 0-D array 1-D)


def check_lengths(lengths, Py_ssize_t B, Py_ssize_t T):
    """``lengths`` as int64 of shape (B,), every value in 0..T."""
    a = np.asarray(lengths)
    if a.size == 0 and a.dtype.kind == "f":  # [] parses as float64
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers, got dtype {a.dtype}")
    if a.ndim != 1 or a.shape[0] != B:
        raise ValueError(f"lengths must have shape ({B},) (one per batch entry), got {a.shape}")
    if B and (a.min() < 0 or a.max() > T):
        raise ValueError(f"lengths must lie in 0..{T} (the sequence length), "
                         f"got values from {a.min()} to {a.max()}")
    return np.ascontiguousarray(a, dtype=np.int64)


def check_state(s, str what, tuple expected):
    a = as_float32(s, what)
    if a.shape != expected:
        raise ValueError(f"{what} must have shape {expected}, got {a.shape}")
    return a


cdef cnp.ndarray empty_aligned(tuple shape):
    """An uninitialised float32 array whose data is 64-byte aligned: every
    vector load or store of a 16-float run then touches one cache line, not
    two (numpy's large arrays start 16 bytes into a page)."""
    cdef size_t n = 1
    for s in shape:
        n *= <size_t>s
    raw = np.empty(n + 16, dtype=np.float32)
    cdef size_t off = ((64 - (<size_t>cnp.PyArray_DATA(raw)) % 64) % 64) // 4
    return raw[off:off + n].reshape(shape)


def _set_team_absent(bint on):
    """Tests: the team's workers take no job, so every share runs on the
    calling thread, after its own (as when a worker wakes too late)."""
    frnn_team_test_absent(on)


def _set_projection_chunk(int steps):
    """Tests: the upfront input projection in chunks of this many steps
    wherever a layer can chunk it; 0: the default (chunks of about 4 MB);
    negative: all steps at once."""
    frnn_set_xchunk(steps)


def _read_probe(a, size_t reps, bint zigzag=False):
    """Benchmarks: reads the C-contiguous 1-d float32 array a reps times with
    the active ISA's kernel (whole lines when a is 64-byte aligned; with
    zigzag, odd passes backwards, as the time loop walks W_hh), GIL released;
    returns the sum (so the reads cannot be skipped)."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 1 or not a.flags.c_contiguous:
        raise TypeError(f"a must be a C-contiguous 1-d float32 numpy array, got {type(a).__name__}"
                        f"{'' if not isinstance(a, np.ndarray) else f' {a.dtype} {a.ndim}-d'}")
    cdef const float *p = <const float *>cnp.PyArray_DATA(a)
    cdef size_t n = a.shape[0]
    cdef float s
    with nogil:
        s = frnn_read_probe(p, n, reps, zigzag)
    return s


def _gemm_capsule():
    """frnn_gemm_packed (fastrnn's kernels on its thread team) for the
    Tree-LSTM's C core in _tree, which links neither."""
    return PyCapsule_New(<void *>frnn_gemm_packed, b"fastrnn._core.gemm_packed", NULL)


def pack_whh(w, int G, int H):
    """W (G*H, K) packed gate-interleaved for the fused kernels."""
    cdef cnp.ndarray src = np.ascontiguousarray(w, dtype=np.float32)
    cdef int K = src.shape[1]
    cdef size_t size = frnn_packed_whh_size(G, H, K)
    cdef cnp.ndarray dst = empty_aligned((size,))
    with nogil:
        frnn_pack_whh(<const float *>cnp.PyArray_DATA(src), G, H, K, <float *>cnp.PyArray_DATA(dst))
    return dst


WTYPES = {"float32": 0, "bf16": 1, "int8": 2}


def quant_native(str dtype):
    """Whether this CPU runs the ``bf16`` / ``int8`` kernels natively (AVX512_BF16 / VNNI)."""
    return bool(frnn_q_native(WTYPES[dtype]))


def quant_amx():
    """Whether quantized products of 16 or more rows run on AMX tiles here."""
    return bool(frnn_q_amx())


def set_quant_no_amx(bint on):
    """Keep AMX off (vector kernels only), for tests."""
    frnn_q_force_no_amx(on)


def set_quant_portable(bint on):
    """Force the portable (emulated) quantized kernels, for tests."""
    frnn_q_force_portable(on)


def gate_interleave(w, int G, int H):
    """Rows of W (G*H, K) from gate-major to [H/16][G][16]: the gates of 16
    hidden units side by side, as the fused recurrent path wants them."""
    w = np.asarray(w)
    return w.reshape(G, H // 16, 16, -1).transpose(1, 0, 2, 3).reshape(G * H, -1)


cdef qpack(int wtype, w, frnn_qmat *m, list keep, int inter=0, int xres=0, int hsym=0):
    """Pack float32 W (N, K) for frnn_qgemm into m; keeps the arrays alive in keep.

    inter: W's rows are gate-interleaved (gate_interleave), for the fused path.
    xres: int8 activations carried to ~16 bits by a second, residual pass.
    hsym: int8 W stored as u8 for symmetric s8 activations (the fused W_hh)."""
    cdef cnp.ndarray src = np.ascontiguousarray(w, dtype=np.float32)
    cdef int N = src.shape[0], K = src.shape[1]
    cdef int N16 = ((N + 15) // 16) * 16
    cdef size_t nbytes = frnn_qpacked_bytes(wtype, N, K)
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    cdef size_t off = (64 - (<size_t>cnp.PyArray_DATA(raw)) % 64) % 64
    cdef cnp.ndarray data = raw[off:off + nbytes]
    cdef cnp.ndarray scale = np.ones(N16, dtype=np.float32)
    cdef cnp.ndarray comp = np.zeros(N16, dtype=np.float32)
    with nogil:
        frnn_qpack(wtype, <const float *>cnp.PyArray_DATA(src), N, K, cnp.PyArray_DATA(data),
                   <float *>cnp.PyArray_DATA(scale), <float *>cnp.PyArray_DATA(comp), hsym)
    keep.extend((data, scale, comp))
    m.wtype = wtype
    m.inter = inter
    m.xres = xres if wtype == WTYPES["int8"] else 0
    m.hsym = hsym if wtype == WTYPES["int8"] else 0
    m.accum = 0
    m.N = N
    m.K = K
    m.data = cnp.PyArray_DATA(data)
    m.scale = <const float *>cnp.PyArray_DATA(scale)
    m.comp = <const float *>cnp.PyArray_DATA(comp)


cdef class Net:
    """Packed weights of one stacked (bi)directional RNN, ready for the C core.

    Immutable after construction: calls only read it, so any number of
    threads may share one Net.
    """
    cdef frnn_net net
    cdef frnn_dir *dirs
    cdef frnn_qmat *qmats
    cdef list _keep
    cdef readonly str cell
    cdef readonly int num_layers, num_dirs, input_size, hidden_size, proj_size
    cdef readonly bint batch_first
    cdef public int num_threads

    def __cinit__(self):
        self.dirs = NULL
        self.qmats = NULL

    def __dealloc__(self):
        free(self.dirs)
        free(self.qmats)

    def __init__(self, str cell, int num_layers, int num_dirs, int input_size, int hidden_size,
                 int proj_size, bint batch_first, bint linear_before_reset, bint input_forget,
                 float clip, list dirs, str dtype="float32"):
        """``dirs``: one dict per (layer, direction), layer-major, with float32
        C-contiguous arrays w_ih, w_hh, bias and optional b_hn, peep, w_hr, and
        ``acts``: three (kind, alpha, beta) tuples."""
        cdef int i, j
        if len(dirs) != num_layers * num_dirs:
            raise ValueError("internal: wrong number of direction weight sets")
        self.cell = cell
        self.num_layers = num_layers
        self.num_dirs = num_dirs
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.proj_size = proj_size
        self.batch_first = batch_first
        self._keep = []
        self.dirs = <frnn_dir *>malloc(len(dirs) * sizeof(frnn_dir))
        if self.dirs == NULL:
            raise MemoryError()
        memset(self.dirs, 0, len(dirs) * sizeof(frnn_dir))
        cdef int wtype = WTYPES[dtype]
        if wtype:
            self.qmats = <frnn_qmat *>malloc(3 * len(dirs) * sizeof(frnn_qmat))
            if self.qmats == NULL:
                raise MemoryError()
        cdef int G = GATES[cell]
        # Quantized cells of the fused recurrent path get their rows (gates)
        # interleaved by 16 hidden units; the others keep the GEMM path.
        qfused = (cell == "RNN" or (cell == "LSTM" and proj_size == 0)
                  or (cell == "GRU" and linear_before_reset)) and hidden_size % 16 == 0
        # The plain RNN's input projection runs int8 x in two passes (x, then its
        # rounding residual): with no gate between x_t and h_t, the rounding of
        # x alone took the T=100 error past 3e-2 at H=1024.
        cdef int xres = cell == "RNN"
        for i, d in enumerate(dirs):
            if wtype and qfused:
                qpack(wtype, gate_interleave(d["w_ih"], G, hidden_size), &self.qmats[3 * i], self._keep, 1, xres)
                self.dirs[i].q_ih = &self.qmats[3 * i]
                qpack(wtype, gate_interleave(d["w_hh"], G, hidden_size), &self.qmats[3 * i + 1], self._keep, 1, 0, 1)
                self.dirs[i].q_hh = &self.qmats[3 * i + 1]
            elif wtype:
                qpack(wtype, d["w_ih"], &self.qmats[3 * i], self._keep, 0, xres)
                self.dirs[i].q_ih = &self.qmats[3 * i]
                if cell == "GRU" and not linear_before_reset:
                    qpack(wtype, d["w_hh"][:2 * hidden_size], &self.qmats[3 * i + 1], self._keep)
                    qpack(wtype, d["w_hh"][2 * hidden_size:], &self.qmats[3 * i + 2], self._keep)
                    self.dirs[i].q_hn = &self.qmats[3 * i + 2]
                else:
                    qpack(wtype, d["w_hh"], &self.qmats[3 * i + 1], self._keep)
                self.dirs[i].q_hh = &self.qmats[3 * i + 1]
            d = dict(d)
            if not wtype:
                # float32: every cell on the fused path; the original-form GRU
                # and the LSTM with projection take a second product a step
                # (W_hn of r * h, W_hr of the unprojected h), packed apart.
                d["w_ih_packed"] = pack_whh(d["w_ih"], G, hidden_size)
                if cell == "GRU" and not linear_before_reset:
                    d["w_hh_packed"] = pack_whh(d["w_hh"][:2 * hidden_size], 2, hidden_size)
                    d["w2_packed"] = pack_whh(d["w_hh"][2 * hidden_size:], 1, hidden_size)
                else:
                    d["w_hh_packed"] = pack_whh(d["w_hh"], G, hidden_size)
            if cell == "LSTM" and proj_size > 0:
                # (quantized layers too: the projection stays float32, on that kernel)
                d["w2_packed"] = pack_whh(d["w_hr"], 1, proj_size)
            for key in ("w_ih", "w_hh", "bias", "b_hn", "peep", "w_hr", "w_ih_packed", "w_hh_packed",
                        "w2_packed"):
                a = d.get(key)
                if a is not None:
                    if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous):
                        raise TypeError(f"internal: {key} must be C-contiguous float32")
                    self._keep.append(a)
            self.dirs[i].w_ih = fptr(d["w_ih"])
            self.dirs[i].w_hh = fptr(d["w_hh"])
            self.dirs[i].bias = fptr(d["bias"])
            self.dirs[i].b_hn = fptr(d.get("b_hn"))
            self.dirs[i].peep = fptr(d.get("peep"))
            self.dirs[i].w_hr = fptr(d.get("w_hr"))
            self.dirs[i].w_ih_packed = fptr(d.get("w_ih_packed"))
            self.dirs[i].w_hh_packed = fptr(d.get("w_hh_packed"))
            self.dirs[i].w2_packed = fptr(d.get("w2_packed"))
            self.dirs[i].whh_finite = frnn_all_finite(self.dirs[i].w_hh, d["w_hh"].size)
            for j, (kind, alpha, beta) in enumerate(d["acts"]):
                self.dirs[i].act[j].kind = kind
                self.dirs[i].act[j].alpha = alpha
                self.dirs[i].act[j].beta = beta
        self.net.cell = CELL_IDS[cell]
        self.net.num_layers = num_layers
        self.net.num_dirs = num_dirs
        self.net.input_size = input_size
        self.net.hidden_size = hidden_size
        self.net.proj_size = proj_size
        self.net.batch_first = batch_first
        self.net.linear_before_reset = linear_before_reset
        self.net.input_forget = input_forget
        self.net.clip = clip
        self.net.dirs = self.dirs
        # Start the worker threads now rather than in the first call.
        with nogil:
            frnn_team_start(frnn_get_num_threads())
        # This thread's working memory for a batch-1 call of RESERVE_STEPS
        # steps, touched now: the first such call would page-fault it in
        # (about 1.7 us a page here: 0.15-0.2 ms of a 0.3 ms T=100 B=1 H=128
        # LSTM first call).
        self.reserve(RESERVE_STEPS, 1)
        # And one step at load time: the process's first call pays once for
        # code and data it touches for the first time (~60-130 us measured,
        # 2.4x a T=100 B=1 H=128 RNN call), and a layer's for its packed weights.
        self.forward(np.zeros((1, 1, input_size), dtype=np.float32))

    def reserve(self, steps, batch=1):
        """Map and touch the calling thread's working memory for a call of
        ``steps`` x ``batch`` (see RNNBase.reserve)."""
        if steps < 0 or batch < 0 or steps > 2147483647 or batch > 2147483647:
            raise ValueError(f"steps and batch must be in 0..2147483647, got steps={steps}, batch={batch}")
        cdef int T = steps, B = batch, nt = self.num_threads, rc
        with nogil:
            rc = frnn_reserve(&self.net, T, B, nt)
        if rc == FRNN_ENOMEM:
            raise MemoryError(f"fastrnn: cannot allocate working memory for T={T}, B={B}")
        if rc != FRNN_OK:
            raise ValueError(f"fastrnn: invalid reserve (code {rc})")

    def forward(self, x, h0=None, c0=None, lengths=None):
        """Validate, run the network in C without the GIL, return (out, h_n, c_n).

        Shapes and semantics are torch.nn.LSTM/GRU/RNN's; c_n is None unless
        the cell is an LSTM.
        """
        cdef bint lstm = self.cell == "LSTM"
        cdef int L = self.num_layers, D = self.num_dirs, H = self.hidden_size
        cdef int Ho = self.proj_size if self.proj_size > 0 else H
        cdef bint unbatched
        x = as_float32(x, "input")
        if x.ndim == 2:
            unbatched = True
            x = x[:, None, :] if not self.batch_first else x[None, :, :]
        elif x.ndim == 3:
            unbatched = False
        else:
            raise ValueError(f"input must be 3-D {'(B, T, input_size)' if self.batch_first else '(T, B, input_size)'}"
                             f" or 2-D (T, input_size) for an unbatched sequence, got {x.ndim}-D with shape {x.shape}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"input has {x.shape[2]} features per step, expected input_size={self.input_size}")
        cdef Py_ssize_t T, B
        if self.batch_first:
            B, T = x.shape[0], x.shape[1]
        else:
            T, B = x.shape[0], x.shape[1]
        if T > 2147483647 or B > 2147483647:
            raise ValueError("sequence length and batch size must fit in 32 bits")
        cdef tuple h_shape, c_shape
        if unbatched:
            h_shape, c_shape = (L * D, Ho), (L * D, H)
        else:
            h_shape, c_shape = (L * D, B, Ho), (L * D, B, H)
        if h0 is not None:
            h0 = check_state(h0, "h0", h_shape)
            if unbatched:
                h0 = h0[:, None, :]
        if c0 is not None:
            c0 = check_state(c0, "c0", c_shape)
            if unbatched:
                c0 = c0[:, None, :]
        if lengths is not None:
            if unbatched:
                raise ValueError("lengths cannot be given for an unbatched (2-D) input")
            lengths = check_lengths(lengths, B, T)

        out_shape = (B, T, D * Ho) if self.batch_first else (T, B, D * Ho)
        cdef cnp.ndarray out = empty_aligned(out_shape)
        cdef cnp.ndarray h_n = np.empty((L * D, B, Ho), dtype=np.float32)
        cdef cnp.ndarray c_n = np.empty((L * D, B, H), dtype=np.float32) if lstm else None
        cdef frnn_call call
        call.T = <int>T
        call.B = <int>B
        call.x = fptr(x)
        call.lengths = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>lengths) if lengths is not None else NULL
        call.h0 = fptr(h0)
        call.c0 = fptr(c0) if lstm else NULL
        call.out = <float *>cnp.PyArray_DATA(out)
        call.h_n = <float *>cnp.PyArray_DATA(h_n)
        call.c_n = <float *>cnp.PyArray_DATA(c_n) if lstm else NULL
        call.num_threads = self.num_threads
        cdef int rc
        with nogil:
            rc = frnn_forward(&self.net, &call)
        if rc == FRNN_ENOMEM:
            raise MemoryError(f"fastrnn: cannot allocate working memory for T={T}, B={B}")
        if rc != FRNN_OK:
            raise ValueError(f"fastrnn: invalid call (code {rc})")
        if unbatched:
            out = out[0] if self.batch_first else out[:, 0]
            h_n = h_n[:, 0]
            if lstm:
                c_n = c_n[:, 0]
        return out, h_n, c_n
