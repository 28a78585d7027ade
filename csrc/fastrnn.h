/* fastrnn C core: public interface used by the Cython boundary.
 *
 * All arrays are float32, C-contiguous. Weights use PyTorch's gate order
 * (LSTM i,f,g,o; GRU r,z,n) and are packed once at load by the caller.
 */
#ifndef FASTRNN_H
#define FASTRNN_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum frnn_cell { FRNN_RNN = 0, FRNN_LSTM = 1, FRNN_GRU = 2 };

enum frnn_act_kind {
    FRNN_ACT_SIGMOID = 0, FRNN_ACT_TANH, FRNN_ACT_RELU, FRNN_ACT_AFFINE,
    FRNN_ACT_LEAKYRELU, FRNN_ACT_THRESHOLDEDRELU, FRNN_ACT_SCALEDTANH,
    FRNN_ACT_HARDSIGMOID, FRNN_ACT_ELU, FRNN_ACT_SOFTSIGN, FRNN_ACT_SOFTPLUS,
    FRNN_ACT_COUNT,
    /* frnn_apply_act only, for tests: the gate kernels' own tanh and their
     * interleaved sigmoid */
    FRNN_ACT_GATE_TANH = 100, FRNN_ACT_GATE_SIGMOID
};

typedef struct { int kind; float alpha, beta; } frnn_act;

/* Weights of one direction of one layer (pointers stay owned by the caller). */
typedef struct {
    const float *w_ih;   /* (G*H, in)                                      */
    const float *w_hh;   /* (G*H, Hout)                                    */
    const float *bias;   /* (G*H) input-side bias, recurrent part pre-added
                            where the math allows; never NULL               */
    const float *b_hn;   /* (H) GRU linear-before-reset recurrent candidate
                            bias, else NULL                                */
    const float *peep;   /* (3H) LSTM peephole i,f,o, or NULL              */
    const float *w_hr;   /* (P, H) LSTM projection, or NULL                */
    const float *w_ih_packed; /* frnn_pack_whh() layout of W_ih (K = in) */
    const float *w_hh_packed; /* frnn_pack_whh() layout, or NULL: the fused
                            recurrent path uses it (original-form GRU: the
                            r, z rows only)                              */
    const float *w2_packed; /* the fused path's second product, packed with
                            G = 1: W_hn (original-form GRU) or W_hr (LSTM
                            with projection); else NULL                  */
    frnn_act act[3];     /* LSTM f,g,h; GRU f,g; RNN f                     */
    /* W_hh holds no inf or NaN (frnn_all_finite): only then is the product
     * of a zero h zero, and may a zero initial state skip it (otherwise
     * 0 * inf must give the NaN the training framework gives) */
    int whh_finite;
    /* Quantized weights (quant.h), or NULL for float32: W_ih; W_hh (for the
     * original-form GRU only its r,z rows, with the n rows in q_hn). */
    const struct frnn_qmat_s *q_ih, *q_hh, *q_hn;
} frnn_dir;

typedef struct {
    int cell;
    int num_layers;
    int num_dirs;        /* 1 or 2 */
    int input_size;
    int hidden_size;
    int proj_size;       /* 0: none */
    int batch_first;
    int linear_before_reset;
    int input_forget;
    float clip;          /* <= 0 or NaN: no clipping */
    const frnn_dir *dirs; /* num_layers * num_dirs, layer-major */
} frnn_net;

typedef struct {
    int T, B;
    const float *x;          /* (T,B,I) or (B,T,I) */
    const int64_t *lengths;  /* (B) or NULL; validated by the caller */
    const float *h0;         /* (L*D, B, Hout) or NULL */
    const float *c0;         /* (L*D, B, H) or NULL */
    float *out;              /* (T,B,D*Hout) or (B,T,D*Hout) */
    float *h_n;              /* (L*D, B, Hout) */
    float *c_n;              /* (L*D, B, H) or NULL (LSTM only) */
    int num_threads;         /* 0: the global setting */
} frnn_call;

enum { FRNN_OK = 0, FRNN_ENOMEM = 1, FRNN_EINVAL = 2 };

/* Runs the whole stacked, possibly bidirectional network. Thread-safe: all
 * working memory is per call. Returns FRNN_OK or an error code. */
int frnn_forward(const frnn_net *net, const frnn_call *call);

/* Maps and touches (faults in) the calling thread's working memory for a
 * T x B call on num_threads threads (0: the global setting), so that its
 * first call of that size or smaller does not page-fault it in. */
int frnn_reserve(const frnn_net *net, int T, int B, int num_threads);

/* Packs W_hh (G*H, K) for the fused recurrent path; dst holds
 * frnn_packed_whh_size(G, H, K) floats. */
size_t frnn_packed_whh_size(int G, int H, int K);
void frnn_pack_whh(const float *w, int G, int H, int K, float *dst);

/* C (M x N, rows N apart) = A (M x K, rows K apart) times W^T, for W (N x K)
 * packed by frnn_pack_whh(w, 1, N, K, wp): fastrnn's kernels on up to
 * nthreads threads of its team (the Tree-LSTM's products). */
void frnn_gemm_packed(const float *wp, int N, int K, const float *A, int M, float *C, int nthreads);
/* 1 if none of the n floats at w is inf or NaN. */
int frnn_all_finite(const float *w, size_t n);

/* The most threads fastrnn runs; larger requests are clamped to it. */
#define FRNN_MAX_THREADS 256
void frnn_set_num_threads(int n);
int frnn_get_num_threads(void);
/* How the team splits a recurrent layer: FRNN_PAR_AUTO chooses per call;
 * HIDDEN gives each thread all rows of a slice of the hidden units (one
 * barrier per step); BATCH gives each thread its own rows and all units
 * (independent time loops). Forcing one is for tests and tuning. */
enum { FRNN_PAR_AUTO = 0, FRNN_PAR_HIDDEN = 1, FRNN_PAR_BATCH = 2 };
void frnn_set_parallel(int mode);
int frnn_get_parallel(void);
/* Where a layer's input projection runs: FRNN_XP_AUTO chooses per call;
 * UPFRONT: one product over all steps before the time loop (xg); STEP:
 * each step's own, added into its recurrent product (fp32 LSTM without
 * projection and RNN layers without lengths that differ; others stay
 * UPFRONT). Forcing one is for tests and tuning. */
enum { FRNN_XP_AUTO = 0, FRNN_XP_UPFRONT = 1, FRNN_XP_STEP = 2 };
void frnn_set_xproj(int mode);
int frnn_get_xproj(void);
/* Tests: the upfront projection in chunks of this many steps wherever a
 * layer can chunk it; 0: chunks by the byte budget (the default); < 0:
 * never in chunks. */
void frnn_set_xchunk(int steps);
void frnn_team_start(int n);
/* Tests: 1 makes the team's workers take no job, so the caller runs every share. */
void frnn_team_test_absent(int on);
/* Frees the working memory each calling thread keeps for its next call
 * (the largest it has needed), except where a call is using it; returns
 * the bytes freed. */
size_t frnn_release_memory(void);

/* Runtime ISA dispatch. */
enum { FRNN_ISA_SCALAR = 0, FRNN_ISA_AVX2 = 1, FRNN_ISA_AVX512 = 2 };
int frnn_isa_supported(int isa);
int frnn_get_isa(void);
/* Forces an ISA (must be supported); returns 0 on success. */
int frnn_set_isa(int isa);
const char *frnn_isa_name(int isa);

/* Applies an activation to n floats in place with the current ISA (tests). */
void frnn_apply_act(const frnn_act *a, float *v, int n);
/* Benchmarks: reads a (n floats) reps times with the active ISA's widest
 * loads (odd passes backwards with zigzag) and returns the sum; see
 * read_probe. */
float frnn_read_probe(const float *a, size_t n, size_t reps, int zigzag);

#ifdef __cplusplus
}
#endif
#endif
