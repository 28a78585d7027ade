# Declarations of the C core (csrc/fastrnn.h).
from libc.stdint cimport int64_t

cdef extern from "fastrnn.h" nogil:
    enum:
        FRNN_RNN, FRNN_LSTM, FRNN_GRU
        FRNN_OK, FRNN_ENOMEM, FRNN_EINVAL
        FRNN_ISA_SCALAR, FRNN_ISA_AVX2, FRNN_ISA_AVX512
        FRNN_ACT_COUNT, FRNN_ACT_GATE_TANH, FRNN_ACT_GATE_SIGMOID

    ctypedef struct frnn_act:
        int kind
        float alpha
        float beta

    ctypedef struct frnn_qmat "struct frnn_qmat_s":
        int wtype
        int N
        int K
        int inter
        int xres
        int hsym
        int accum
        const void *data
        const float *scale
        const float *comp

    ctypedef struct frnn_dir:
        const float *w_ih
        const float *w_hh
        const float *bias
        const float *b_hn
        const float *peep
        const float *w_hr
        const float *w_ih_packed
        const float *w_hh_packed
        const float *w2_packed
        frnn_act act[3]
        int whh_finite
        const frnn_qmat *q_ih
        const frnn_qmat *q_hh
        const frnn_qmat *q_hn

    ctypedef struct frnn_net:
        int cell
        int num_layers
        int num_dirs
        int input_size
        int hidden_size
        int proj_size
        int batch_first
        int linear_before_reset
        int input_forget
        float clip
        const frnn_dir *dirs

    ctypedef struct frnn_call:
        int T
        int B
        const float *x
        const int64_t *lengths
        const float *h0
        const float *c0
        float *out
        float *h_n
        float *c_n
        int num_threads

    int frnn_forward(const frnn_net *net, const frnn_call *call)
    int frnn_reserve(const frnn_net *net, int T, int B, int num_threads)
    size_t frnn_packed_whh_size(int G, int H, int K)
    void frnn_pack_whh(const float *w, int G, int H, int K, float *dst)
    void frnn_gemm_packed(const float *wp, int N, int K, const float *A, int M, float *C, int nthreads)
    int frnn_all_finite(const float *w, size_t n)
    int FRNN_MAX_THREADS
    void frnn_set_num_threads(int n)
    int frnn_get_num_threads()
    void frnn_set_parallel(int mode)
    int frnn_get_parallel()
    void frnn_set_xproj(int mode)
    void frnn_set_xchunk(int steps)
    float frnn_read_probe(const float *a, size_t n, size_t reps, int zigzag)
    int frnn_get_xproj()
    void frnn_team_start(int n)
    void frnn_team_test_absent(int on)
    size_t frnn_release_memory()
    int frnn_isa_supported(int isa)
    int frnn_get_isa()
    int frnn_set_isa(int isa)
    const char *frnn_isa_name(int isa)
    void frnn_apply_act(const frnn_act *a, float *v, int n)

cdef extern from "quant.h" nogil:
    size_t frnn_qpacked_bytes(int wtype, int N, int K)
    void frnn_qpack(int wtype, const float *w, int N, int K, void *dst, float *scale, float *comp, int hsym)
    int frnn_q_native(int wtype)
    int frnn_q_amx()
    void frnn_q_force_no_amx(int on)
    void frnn_q_force_portable(int on)
