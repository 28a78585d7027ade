/* Internal interface between the time loop and the per-ISA fused kernels. */
#ifndef FRNN_KERNELS_H
#define FRNN_KERNELS_H
#include "fastrnn.h"

/* Everything a fused kernel needs besides the per-step data. */
typedef struct {
    int H;               /* hidden size (cell width)                     */
    int fast;            /* default activations, no clip, no peephole    */
    int input_forget;
    float clip;          /* > 0: clip pre-activations                    */
    const float *bias;   /* (G*H)                                        */
    const float *b_hn;   /* GRU linear-before-reset: (H)                 */
    const float *peep;   /* LSTM: (3H) i,f,o or NULL                     */
    frnn_act act[3];
} frnn_cellp;

/* Hidden units per packed W_hh block (see recur_impl.h). */
#define UB 16

/* One step of the packed recurrent path (LSTM, GRU, RNN; the first half of
 * a step of the original-form GRU and of the LSTM with projection, whose
 * second half is frnn_rstep2). Rows are the active batch entries in
 * sorted order; hin/hout are h_{t-1} and h_t (n, H), c is updated in place. */
typedef struct {
    int cell, G, K;
    const float *wp;           /* packed W_hh [nblk][K][G][UB] */
    const frnn_cellp *cp;
    const float *hin;
    float *hout;
    float *c;
    const float *const *xrow;
    float *const *orow;
    size_t xbs;                /* floats between a row's unit blocks in xg */
    int hzero;                 /* hin is all zeros: the product is skipped */
    /* LSTM / RNN only, or NULL: the step's own input rows (ldx floats
     * apart, kx wide), whose product with the packed W_ih (wpx) goes
     * straight into the tile the recurrent product adds to; xrow then
     * points at zeros (xbs 0) */
    const float *xin;
    const float *wpx;
    size_t ldx;
    int kx;
    /* GRU original form, first half of a step (r, z only: G is 2 while
     * xg's blocks hold all 3 gates): z_t and r_t * h_{t-1} go to these
     * rows (H apart) instead of h_t; else NULL */
    float *zb, *rh;
} frnn_rstep;

/* The second half of a step of the two-product cells, over output unit
 * blocks: a single-gate product (W packed [nblk][K][1][UB]) and then
 *   GRU original form: n_t = g(x_n + b_n + W_hn (r_t * h_{t-1})),
 *                      h_t = n_t + z_t * (h_{t-1} - n_t)
 *   LSTM with projection: h_t = W_hr (o_t * h(c_t)), stored as is.
 * Rows as in frnn_rstep; a is the product's left operand (r_t * h_{t-1},
 * or the unprojected h), K floats apart; hout rows N apart. */
typedef struct {
    int cell, K, N;
    const float *wp;
    const frnn_cellp *cp;
    const float *a;
    float *hout;
    const float *z, *hin;      /* GRU: z_t and h_{t-1}, H apart */
    const float *const *xrow;  /* GRU: xg rows, unit blocks xbs apart ([g][UB]) */
    size_t xbs;
    float *const *orow;        /* output rows, or NULL */
} frnn_rstep2;

/* n rows of a product's left operand and where their results go: rows of
 * the output are a fixed distance apart within a segment, not between two. */
typedef struct {
    const float *a;
    float *out;
    int n;
} frnn_rows;
/* The projection's segments per call: a chunk of rows cut at steps. */
#define FRNN_ROWS_MAX 8

/* Row r of a step: xrow[r] is its input-projection row (G*H), orow[r] its
 * output row (or orow == NULL: don't write output). State rows are
 * contiguous: row r of a (n, H) buffer. */
typedef struct {
    void (*lstm)(const frnn_cellp *p, int n, const float *const *xrow,
                 const float *hg, float *c, float *h, float *const *orow);
    void (*gru_lbr)(const frnn_cellp *p, int n, const float *const *xrow,
                    const float *hg, float *h, float *const *orow);
    void (*gru_rz)(const frnn_cellp *p, int n, const float *const *xrow,
                   float *hg, const float *h, float *rh);
    void (*gru_n)(const frnn_cellp *p, int n, const float *const *xrow,
                  const float *hg, const float *hn, float *h, float *const *orow);
    void (*rnn)(const frnn_cellp *p, int n, const float *const *xrow,
                const float *hg, float *h, float *const *orow);
    void (*act)(const frnn_act *a, float *v, int n);
    /* pfb: the first block of the caller's next call (its panel is
     * prefetched during the last block), or -1 */
    void (*rstep)(const frnn_rstep *s, int b0, int b1, int n, int pfb);
    /* The second half of a step, output unit blocks [b0, b1) (pfb as above). */
    void (*rstep2)(const frnn_rstep2 *s, int b0, int b1, int n, int pfb);
    /* Input projection of the rows of nseg segments of X (rows ldx floats
     * apart) into xg rows of the packed layout, unit blocks [b0, b1): a
     * segment's row r, unit block b at seg.out + r * ldo + b * bso. xpf:
     * the caller's next xpf_bytes of X, prefetched during the last block,
     * or NULL. */
    void (*proj)(const float *wp, int G, int cell, int b0, int b1, int K, const frnn_rows *seg,
                 int nseg, size_t ldx, size_t ldo, size_t bso, const char *xpf, size_t xpf_bytes);
    /* Fused quantized step: the gate math of unit blocks [ub0, ub1) for n
     * rows, from recurrent products hg laid out [unit block][gate][UB]. */
    void (*qepi)(const frnn_rstep *s, const float *hg, size_t ld, int ub0, int ub1, int n);
    /* Benchmarks: the sum of a's n floats, read reps times, odd passes
     * backwards with zigzag (see read_probe). */
    float (*read_probe)(const float *a, size_t n, size_t reps, int zigzag);
} frnn_kernels;

extern const frnn_kernels frnn_kernels_scalar;
#if defined(__x86_64__) || defined(_M_X64)
#define FRNN_HAVE_X86 1
extern const frnn_kernels frnn_kernels_avx2;
extern const frnn_kernels frnn_kernels_avx512;
#endif

const frnn_kernels *frnn_active_kernels(void);

#endif
