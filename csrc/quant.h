/* Reduced-precision weights: bf16 and int8 matrices and their GEMM. */
#ifndef FRNN_QUANT_H
#define FRNN_QUANT_H
#include <stddef.h>
#include <stdint.h>

enum { FRNN_W_F32 = 0, FRNN_W_BF16 = 1, FRNN_W_I8 = 2 };

/* A weight matrix W (N, K) packed in blocks of 16 output rows:
 * bf16: uint16 [N/16][K/2][16][2]   (pairs along K, for vdpbf16ps)
 * int8: int8   [N/16][K/4][16][4]   (quads along K, for vpdpbusd), with a
 *       symmetric scale per output row and 128 * sum_k q per row (for
 *       the zero points of the u8 activations: z * sum_k q). */
typedef struct frnn_qmat_s {
    int wtype, N, K;
    /* 1: the rows are the gates of 16 hidden units at a time ([unit block]
     * [gate][16], the layout of the fused recurrent path), 0: gate-major. */
    int inter;
    /* int8: A's rounding error is quantized too, on a grid 256 times finer,
     * and multiplied in a second pass: A carried to about 16 bits for twice
     * the products. Set for the plain RNN's input weights, whose cell has no
     * gate to damp the rounding of x. */
    int xres;
    /* int8, the fused path's W_hh: W stored as u8 (q + 128) and the
     * activations (h) quantized symmetrically to s8, per row, or at batch 1
     * per block (frnn_hq_*): u8 x s8 products then need one correction per
     * row or block, 128 * sum q, instead of a sum over W per output (comp is
     * 1 and a row's zero point is that correction). */
    int hsym;
    /* internal (frnn_qgemm's second pass): the kernels add to C */
    int accum;
    const void *data;
    const float *scale;   /* int8: (N16) */
    const float *comp;    /* int8: (N16) */
} frnn_qmat;

size_t frnn_qpacked_bytes(int wtype, int N, int K);
/* Packs w (N, K) float32; scale/comp: arrays of ceil(N/16)*16 floats (int8);
 * hsym: int8 stored as u8 (see frnn_qmat.hsym). */
void frnn_qpack(int wtype, const float *w, int N, int K, void *dst, float *scale, float *comp, int hsym);
/* Bytes of scratch frnn_qgemm needs for M rows. */
size_t frnn_qscratch_bytes(const frnn_qmat *m, int M);
/* C (M, N; ldc) = A (M, K; lda) . W^T, A quantized on the fly like W:
 * bf16 rounded to nearest even; int8 per row, dynamic, asymmetric u8 (and
 * with m->xres its residual too).
 * Threads split the rows when there are many, unless by_cols: then each
 * thread computes a slice of the outputs for all rows, the slice it will
 * own in a time loop that follows (its columns stay in its own cache). */
void frnn_qgemm(const frnn_qmat *m, int M, const float *A, int lda, float *C, int ldc, void *scratch,
                int nthreads, int by_cols);

/* The two halves of frnn_qgemm, for the fused recurrent path: quantize M
 * rows of A into scratch (returns the row pitch of the quantized rows, and
 * in *sa per row its scale and zero point / 128, or with m->hsym its
 * correction 128 * sum q, int8 only), then blocks
 * [b0, b1) of 16 outputs for those rows
 * (C's columns b*16 ...), on the calling thread. */
size_t frnn_qquantize(const frnn_qmat *m, int M, const float *A, int lda, void *scratch, float **sa);
void frnn_qgemm_part(const frnn_qmat *m, int M, const void *qa, size_t qld, const float *sa,
                     float *C, int ldc, size_t b0, size_t b1);

/* Batch-1 int8 steps of the fused path. h_{t-1} is quantized
 * symmetrically per block of FRNN_HBLK hidden units, each block by the
 * thread that computed it, right after its gate math: no thread reads the
 * other's float h, and nobody quantizes a block twice. The product takes W
 * as u8 (q + 128, flipped on the fly) times the s8 blocks, so a block's
 * zero-point correction is one number per block (128 * sum q), not a sum
 * over W; each block's int32 sum is dequantized with its own scale.
 * (frnn_qmat.hsym.) A quantized h (frnn_hq_bytes(K)): per block a 64-byte line {scale,
 * 128 * sum q} (a line each: different threads write them), then the K
 * values as int8, zero padded to whole lines. */
#define FRNN_HBLK 64
size_t frnn_hq_bytes(int K);
/* Blocks covering h[k0, k1) (k0 a multiple of FRNN_HBLK; k1 a multiple of
 * it or K) into hq; a block with a non-finite value gets a NaN scale. */
void frnn_hq_quantize(const float *h, int k0, int k1, int K, void *hq);
/* C[j] for outputs of blocks [b0, b1) of 16 (m->inter and m->hsym, K = hidden size)
 * from the quantized h; rev walks them backwards. Each output sums its K
 * blocks starting at the block of its own hidden unit and wrapping around:
 * a thread meets its own blocks (already in its cache) before the other
 * thread's, while the order stays a property of the output alone (the
 * same for any grouping or thread count). */
void frnn_hq_gemv(const frnn_qmat *m, const void *hq, float *C, size_t b0, size_t b1, int rev);

/* bf16, the fused path: columns [c0, c1) of M rows of A rounded into rows
 * of dst qld bytes apart (qld: what frnn_qquantize returns for m), so that
 * the threads computing h_t's units each round their own and none reads
 * the other's float h. The same numbers as frnn_qquantize. */
void frnn_qbf16_cols(const frnn_qmat *m, int M, const float *A, int lda, int c0, int c1, void *dst, size_t qld);
size_t frnn_qrow_bytes(const frnn_qmat *m);

/* frnn_qgemm_part may leave this thread's AMX tiles configured for the
 * next call with as many rows; a caller that is done with them (a time
 * loop's end) releases them with this. */
void frnn_q_release_tiles(void);

/* Which quantized paths this CPU runs natively; 0: emulated. */
int frnn_q_native(int wtype);
/* Force the emulated (portable) quantized kernels: 1 on, 0 off. */
void frnn_q_force_portable(int on);
/* Whether AMX tiles (tdpbusd / tdpbf16ps) are used for 16-row tiles, and a
 * switch to keep them off (1) for tests; FASTRNN_AMX=0 turns them off too. */
int frnn_q_amx(void);
void frnn_q_force_no_amx(int on);

#endif
