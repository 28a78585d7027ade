/* bf16 and int8 GEMM for quantized layers.
 *
 * Weights are quantized once at load: bf16 by round-to-nearest-even; int8
 * symmetrically per output row, q = round(w / s), s = max|w_row| / 127. The
 * activations (x for the input projection, h each step) are quantized on
 * the fly per row: bf16 by rounding; int8 dynamically and asymmetrically,
 * u = round(a / s_a) + z_a in 0..255 over the row's range [min(a, 0),
 * max(a, 0)] (PyTorch's dynamic quantized LSTM and ONNX Runtime's
 * DynamicQuantizeLSTM use such a grid per tensor; here each row has its
 * own). The fused recurrent path's h is the exception (frnn_qmat.hsym):
 * symmetric s8 against W_hh stored as u8, per row, and at batch 1 per block
 * of 64 hidden units, each block quantized by the thread that computed it
 * (frnn_hq_*), so no step waits for a thread to read the other's float h.
 * Dot
 * products accumulate in fp32 (bf16) or int32 (int8); everything after the
 * GEMM (gate math, states) stays fp32.
 *
 * Native paths: AMX tiles (tdpbusd / tdpbf16ps) for 16-row tiles where
 * Linux grants the tile state (and bf16 batch-1 steps on M-row tiles);
 * otherwise AVX-512: int8 with VNNI vpdpbusd, bf16 converted to fp32 pairs
 * and FMAs (vdpbf16ps measured slower than that on the CPUs we have), up to
 * 8 blocks of 16 outputs x 6 rows per micro-kernel call. Elsewhere a portable
 * path computes the same sums (exactly the same for int8). */
#define _GNU_SOURCE
#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "quant.h"
#include "team.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FRNN_Q_X86 1
#include <immintrin.h>
#endif

static int g_force_portable = 0;
void frnn_q_force_portable(int on) { __atomic_store_n(&g_force_portable, on, __ATOMIC_RELAXED); }

int frnn_q_native(int wtype)
{
#ifdef FRNN_Q_X86
    __builtin_cpu_init();
    if (wtype == FRNN_W_BF16) return __builtin_cpu_supports("avx512f");
    if (wtype == FRNN_W_I8)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni");
#endif
    (void)wtype;
    return 0;
}

static int use_native(int wtype)
{
    return !__atomic_load_n(&g_force_portable, __ATOMIC_RELAXED) && frnn_q_native(wtype);
}

static inline int kgroup(int wtype) { return wtype == FRNN_W_BF16 ? 2 : 4; }
static inline size_t nblocks(int N) { return ((size_t)N + 15) / 16; }
static inline size_t kgroups(int wtype, int K) { return ((size_t)K + kgroup(wtype) - 1) / kgroup(wtype); }

size_t frnn_qpacked_bytes(int wtype, int N, int K)
{
    const size_t elems = nblocks(N) * kgroups(wtype, K) * 16 * kgroup(wtype);
    return wtype == FRNN_W_BF16 ? elems * 2 : elems;
}

static inline uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* nearest even */
    return (uint16_t)(u >> 16);
}

static inline float from_bf16(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void frnn_qpack(int wtype, const float *w, int N, int K, void *dst, float *scale, float *comp, int hsym)
{
    const size_t nb = nblocks(N), kg = kgroups(wtype, K);
    const int g = kgroup(wtype);
    if (wtype == FRNN_W_I8) {
        for (size_t j = 0; j < nb * 16; j++) {
            float m = 0.0f;
            if (j < (size_t)N)
                for (int k = 0; k < K; k++) m = fmaxf(m, fabsf(w[j * K + k]));
            scale[j] = m > 0.0f ? m / 127.0f : 1.0f;
            comp[j] = 0.0f;
        }
    }
    for (size_t b = 0; b < nb; b++)
        for (size_t q = 0; q < kg; q++)
            for (int u = 0; u < 16; u++)
                for (int e = 0; e < g; e++) {
                    const size_t j = b * 16 + u, k = q * g + e;
                    const float v = (j < (size_t)N && k < (size_t)K) ? w[j * K + k] : 0.0f;
                    const size_t at = ((b * kg + q) * 16 + u) * g + e;
                    if (wtype == FRNN_W_BF16) {
                        ((uint16_t *)dst)[at] = to_bf16(v);
                    } else {
                        long r = lrintf(v / scale[j]);
                        r = r > 127 ? 127 : r < -127 ? -127 : r;
                        if (hsym) ((uint8_t *)dst)[at] = (uint8_t)(r + 128);
                        else ((int8_t *)dst)[at] = (int8_t)r;
                        comp[j] += 128.0f * (float)r;
                    }
                }
    if (wtype == FRNN_W_I8 && hsym)
        for (size_t j = 0; j < nb * 16; j++) comp[j] = 1.0f;
}

/* -- activations quantized per row ---------------------------------------- */

static size_t quantized_ld(const frnn_qmat *m);

static inline int has_resid(const frnn_qmat *m) { return m->xres && m->wtype == FRNN_W_I8; }

/* Where M quantized rows' residual copy (rows, then scales) starts in the
 * scratch: after the rows and their scales. */
static size_t resid_offset(const frnn_qmat *m, int M)
{
    return ((size_t)M * quantized_ld(m) + 2 * (size_t)M * sizeof(float) + 63) & ~(size_t)63;
}

size_t frnn_qscratch_bytes(const frnn_qmat *m, int M)
{
    return resid_offset(m, M) * (has_resid(m) ? 2 : 1) + 64;
}

/* The asymmetric int8 grid of a row with range [lo, hi] (lo <= 0 <= hi):
 * 256 levels, step s = hi/255 - lo/255 (no overflow), zero point z (the
 * level of 0.0, exactly representable). A row too small for a finite 1/s
 * is quantized as zeros. */
static inline void i8_grid(float lo, float hi, float *s, float *inv, float *z)
{
    float st = hi / 255.0f - lo / 255.0f;
    if (!(st >= 0x1p-100f)) st = 1.0f;
    *s = st;
    *inv = 1.0f / st;
    float zz = rintf(-lo * *inv);
    *z = zz < 0.0f ? 0.0f : zz > 255.0f ? 255.0f : zz;
}

/* A row with a non-finite value: zeros (level 128) and a NaN scale, so its
 * outputs become NaN as the float math's would; its residual (q2) alike. */
static void i8_nonfinite_row(int K, uint8_t *q, float *sz, uint8_t *q2, float *sz2)
{
    memset(q, 128, (size_t)K);
    sz[0] = NAN;
    sz[1] = 1.0f;
    if (q2) i8_nonfinite_row(K, q2, sz2, NULL, NULL);
}

/* A row's scale and zero point / 128 (and its residual's: s / 256, 128). */
static void i8_row_scales(float s, float z, float *sz, float *sz2)
{
    sz[0] = s;
    sz[1] = z / 128.0f;
    if (sz2) {
        sz2[0] = s / 256.0f;
        sz2[1] = 1.0f;
    }
}

/* -- batch-1 block-quantized h (quant.h: frnn_hq_*) ------------------------ */

static inline size_t hq_nblocks(int K) { return ((size_t)K + FRNN_HBLK - 1) / FRNN_HBLK; }

size_t frnn_hq_bytes(int K)
{
    return hq_nblocks(K) * 64 + ((kgroups(FRNN_W_I8, K) * 4 + 63) & ~(size_t)63);
}

/* A block's symmetric grid from its largest magnitude: s = amax / 127, and
 * s = 1 (all zeros) when 1/s would not be finite. */
static inline void hq_grid(float amax, float *s, float *inv)
{
    float st = amax / 127.0f;
    if (!(st >= 0x1p-100f)) st = 1.0f;
    *s = st;
    *inv = 1.0f / st;
}

static inline void hq_meta(char *line, float s, int32_t qsum)
{
    const int32_t corr = 128 * qsum;
    memcpy(line, &s, 4);
    memcpy(line + 4, &corr, 4);
}

/* n floats to s8 on their symmetric grid (hq_grid): *s its step (NaN, and
 * zeros, when a value is not finite) and *qsum the sum of the q. */
static void sym_quant_portable(const float *a, int n, int8_t *q, float *s, int32_t *qsum)
{
    float amax = 0.0f;
    for (int k = 0; k < n; k++) {
        const float v = fabsf(a[k]);
        if (!(v <= 3.0e38f)) {
            memset(q, 0, (size_t)n);
            *s = NAN;
            *qsum = 0;
            return;
        }
        if (v > amax) amax = v;
    }
    float inv;
    hq_grid(amax, s, &inv);
    int32_t sum = 0;
    for (int k = 0; k < n; k++) {
        long v = lrintf(a[k] * inv);
        v = v > 127 ? 127 : v < -127 ? -127 : v;
        q[k] = (int8_t)v;
        sum += (int32_t)v;
    }
    *qsum = sum;
}

#ifdef FRNN_Q_X86
/* sym_quant_portable's numbers, 16 at a time. */
__attribute__((target("avx512f,avx512bw"))) static void sym_quant_avx512(const float *a, int n, int8_t *q,
                                                                        float *s, int32_t *qsum)
{
    const __m512i absm = _mm512_set1_epi32(0x7fffffff);
    __m512 mx = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int k = 0; k < n; k += 16) {
        const __mmask16 mk = n - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - k)) - 1u);
        const __m512 av = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(_mm512_maskz_loadu_ps(mk, a + k)), absm));
        bad |= _mm512_mask_cmp_ps_mask(mk, av, _mm512_set1_ps(3.0e38f), _CMP_NLE_UQ);
        mx = _mm512_max_ps(mx, av);
    }
    if (bad) {
        memset(q, 0, (size_t)n);
        *s = NAN;
        *qsum = 0;
        return;
    }
    float inv;
    hq_grid(_mm512_reduce_max_ps(mx), s, &inv);
    const __m512 iv = _mm512_set1_ps(inv);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    __m512i sum = _mm512_setzero_si512();
    for (int k = 0; k < n; k += 16) {
        const __mmask16 mk = n - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - k)) - 1u);
        __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, a + k), iv));
        v = _mm512_maskz_min_epi32(mk, _mm512_max_epi32(v, lo), hi);
        sum = _mm512_add_epi32(sum, v);
        _mm512_mask_cvtepi32_storeu_epi8(q + k, mk, v);
    }
    *qsum = _mm512_reduce_add_epi32(sum);
}
#endif

static void sym_quant(const float *a, int n, int8_t *q, float *s, int32_t *qsum)
{
#ifdef FRNN_Q_X86
    if (use_native(FRNN_W_I8)) {
        sym_quant_avx512(a, n, q, s, qsum);
        return;
    }
#endif
    sym_quant_portable(a, n, q, s, qsum);
}

#ifdef FRNN_Q_X86
/* One row of K floats to u8, u = clamp(round(a / s) + z, 0, 255), nearest
 * even, on i8_grid's grid; sz gets s and z / 128 (s NaN if the row is not
 * finite). With q2: the residual a - (u - z) s too, on the grid s / 256 with
 * zero point 128, its scale and 1 in sz2. The same numbers as the scalar
 * loop below, 16 at a time. */
__attribute__((target("avx512f,avx512bw"))) static void quant_row_i8_avx512(const float *a, int K, uint8_t *q,
                                                                            float *sz, uint8_t *q2, float *sz2)
{
    __m512 mx = _mm512_setzero_ps(), mn = _mm512_setzero_ps();
    const __m512i absm = _mm512_set1_epi32(0x7fffffff);
    __mmask16 bad = 0;
    int k = 0;
    for (; k < K; k += 16) {
        const __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1u);
        const __m512 v = _mm512_maskz_loadu_ps(m, a + k);
        const __m512 av = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), absm));
        bad |= _mm512_mask_cmp_ps_mask(m, av, _mm512_set1_ps(3.0e38f), _CMP_NLE_UQ);
        mx = _mm512_max_ps(mx, v);
        mn = _mm512_min_ps(mn, v);
    }
    if (bad) {
        i8_nonfinite_row(K, q, sz, q2, sz2);
        return;
    }
    float s, inv, z;
    i8_grid(_mm512_reduce_min_ps(mn), _mm512_reduce_max_ps(mx), &s, &inv, &z);
    const __m512 iv = _mm512_set1_ps(inv), sv = _mm512_set1_ps(s), iv2 = _mm512_set1_ps(inv * 256.0f);
    const __m512i zv = _mm512_set1_epi32((int)z), z2 = _mm512_set1_epi32(128), top = _mm512_set1_epi32(255);
    for (k = 0; k < K; k += 16) {
        const __mmask16 msk = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1u);
        const __m512 av = _mm512_maskz_loadu_ps(msk, a + k);
        __m512i v = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(av, iv)), zv);
        v = _mm512_min_epi32(_mm512_max_epi32(v, _mm512_setzero_si512()), top);
        _mm512_mask_cvtepi32_storeu_epi8(q + k, msk, v);
        if (q2) {
            const __m512 r = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(v, zv)), sv, av);
            __m512i w = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(r, iv2)), z2);
            w = _mm512_min_epi32(_mm512_max_epi32(w, _mm512_setzero_si512()), top);
            _mm512_mask_cvtepi32_storeu_epi8(q2 + k, msk, w);
        }
    }
    i8_row_scales(s, z, sz, q2 ? sz2 : NULL);
}
#endif

#ifdef FRNN_Q_X86
/* K floats to bf16, nearest even, NaN quieted: to_bf16 16 at a time. */
__attribute__((target("avx512f"))) static void quant_row_bf16_avx512(const float *a, int K, uint16_t *q)
{
    for (int k = 0; k < K; k += 16) {
        const __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1u);
        const __m512i u = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, a + k));
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                      _mm512_set1_epi32(0x7f800000));
        const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))), 16);
        r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
        _mm512_mask_cvtepi32_storeu_epi16(q + k, m, r);
    }
}
#endif

/* Row r of the quantized A at q + r * qld; int8: its scale in sa[2r] (NaN
 * when the row is not finite: its outputs become NaN, as the float math
 * would) and its zero point / 128 in sa[2r + 1]. With m->xres the residual
 * rows follow in the same layout from resid_offset on. */
static size_t quantized_ld(const frnn_qmat *m)
{
    const size_t rowb = kgroups(m->wtype, m->K) * kgroup(m->wtype) * (m->wtype == FRNN_W_BF16 ? 2 : 1);
    return ((rowb + 63) / 64) * 64;
}

/* n floats to bf16, nearest even (AVX-512 where the CPU has it). */
static void round_bf16(const float *a, int n, uint16_t *q)
{
#ifdef FRNN_Q_X86
    if (use_native(FRNN_W_BF16)) {
        quant_row_bf16_avx512(a, n, q);
        return;
    }
#endif
    for (int k = 0; k < n; k++) q[k] = to_bf16(a[k]);
}

/* Rows [r0, r1) of the M rows of A into scratch (quantize_rows' layout). */
static void quantize_rows_part(const frnn_qmat *m, int M, int r0, int r1, const float *A, int lda,
                               void *scratch)
{
    const int g = kgroup(m->wtype), K = m->K;
    const size_t kg = kgroups(m->wtype, K);
    const size_t qld = quantized_ld(m);
    float *sa = (float *)((char *)scratch + (size_t)M * qld);
    char *res = has_resid(m) ? (char *)scratch + resid_offset(m, M) : NULL;
    for (int r = r0; r < r1; r++) {
        const float *a = A + (size_t)r * lda;
        if (m->wtype == FRNN_W_BF16) {
            uint16_t *q = (uint16_t *)((char *)scratch + (size_t)r * qld);
            round_bf16(a, K, q);
            for (size_t k = K; k < kg * g; k++) q[k] = 0;
        } else {
            uint8_t *q = (uint8_t *)scratch + (size_t)r * qld;
            float *sz = sa + 2 * (size_t)r;
            uint8_t *q2 = res ? (uint8_t *)res + (size_t)r * qld : NULL;
            float *sz2 = res ? (float *)(res + (size_t)M * qld) + 2 * (size_t)r : NULL;
            if (m->hsym) {
                /* symmetric s8 (a row as one block): padding 0 */
                for (size_t k = K; k < kg * g; k++) q[k] = 0;
                int32_t qsum;
                sym_quant(a, K, (int8_t *)q, &sz[0], &qsum);
                sz[1] = 128.0f * (float)qsum;   /* exact while K < 2^17 */
                continue;
            }
            for (size_t k = K; k < kg * g; k++) {
                q[k] = 128;   /* padding: W is 0 there */
                if (q2) q2[k] = 128;
            }
#ifdef FRNN_Q_X86
            if (use_native(FRNN_W_I8)) {
                quant_row_i8_avx512(a, K, q, sz, q2, sz2);
                continue;
            }
#endif
            float lo = 0.0f, hi = 0.0f;
            int finite = 1;
            for (int k = 0; k < K; k++) {
                const float v = a[k];
                if (!(fabsf(v) <= 3.0e38f)) finite = 0;
                else if (v > hi) hi = v;
                else if (v < lo) lo = v;
            }
            if (!finite) {
                i8_nonfinite_row(K, q, sz, q2, sz2);
                continue;
            }
            float s, inv, z;
            i8_grid(lo, hi, &s, &inv, &z);
            const float inv2 = inv * 256.0f;
            for (int k = 0; k < K; k++) {
                long v = lrintf(a[k] * inv) + (long)z;
                v = v > 255 ? 255 : v < 0 ? 0 : v;
                q[k] = (uint8_t)v;
                if (q2) {
                    long w = lrintf(fmaf(-(float)(v - (long)z), s, a[k]) * inv2) + 128;
                    q2[k] = (uint8_t)(w > 255 ? 255 : w < 0 ? 0 : w);
                }
            }
            i8_row_scales(s, z, sz, q2 ? sz2 : NULL);
        }
    }
}

size_t frnn_qrow_bytes(const frnn_qmat *m) { return quantized_ld(m); }

void frnn_qbf16_cols(const frnn_qmat *m, int M, const float *A, int lda, int c0, int c1, void *dst, size_t qld)
{
    for (int r = 0; r < M; r++) {
        const float *a = A + (size_t)r * lda;
        round_bf16(a + c0, c1 - c0, (uint16_t *)((char *)dst + (size_t)r * qld) + c0);
    }
    (void)m;
}

static size_t quantize_rows(const frnn_qmat *m, int M, const float *A, int lda, void *scratch,
                            float **sa_out)
{
    const size_t qld = quantized_ld(m);
    quantize_rows_part(m, M, 0, M, A, lda, scratch);
    *sa_out = (float *)((char *)scratch + (size_t)M * qld);
    return qld;
}

/* -- portable kernels ------------------------------------------------------ */

static void qgemm_portable(const frnn_qmat *m, int M, const void *qa, size_t qld, const float *sa,
                           float *C, int ldc, size_t bb, size_t nb)
{
    const int g = kgroup(m->wtype), N = m->N;
    const size_t kg = kgroups(m->wtype, m->K);
    for (int r = 0; r < M; r++) {
        for (size_t b = bb; b < nb; b++) {
            if (m->wtype == FRNN_W_BF16) {
                const uint16_t *h = (const uint16_t *)((const char *)qa + (size_t)r * qld);
                const uint16_t *w = (const uint16_t *)m->data + b * kg * 16 * g;
                float acc[16] = {0};
                for (size_t q = 0; q < kg; q++)
                    for (int u = 0; u < 16; u++)
                        for (int e = 0; e < g; e++)
                            acc[u] += from_bf16(w[(q * 16 + u) * g + e]) * from_bf16(h[q * g + e]);
                for (int u = 0; u < 16 && b * 16 + u < (size_t)N; u++) {
                    float *c = C + (size_t)r * ldc + b * 16 + u;
                    *c = m->accum ? *c + acc[u] : acc[u];
                }
            } else {
                const char *h = (const char *)qa + (size_t)r * qld;
                const char *w = (const char *)m->data + b * kg * 16 * g;
                int32_t acc[16] = {0};
                for (size_t q = 0; q < kg; q++)
                    for (int u = 0; u < 16; u++)
                        for (int e = 0; e < g; e++) {
                            const char hv = h[q * g + e], wv = w[(q * 16 + u) * g + e];
                            acc[u] += m->hsym ? (int32_t)(int8_t)hv * (int32_t)(uint8_t)wv
                                              : (int32_t)(uint8_t)hv * (int32_t)(int8_t)wv;
                        }
                for (int u = 0; u < 16 && b * 16 + u < (size_t)N; u++) {
                    const size_t j = b * 16 + u;
                    const float v = fmaf(-sa[2 * r + 1], m->comp[j], (float)acc[u]) * (sa[2 * r] * m->scale[j]);
                    float *c = C + (size_t)r * ldc + j;
                    *c = m->accum ? *c + v : v;
                }
            }
        }
    }
}

/* -- native AVX-512 kernels -------------------------------------------------- */
#ifdef FRNN_Q_X86
#define QR 6   /* rows per micro-kernel call */
#define QB 4   /* blocks of 16 outputs per call */
#define QB1 8  /* ... when there is one row: more independent accumulator chains */

/* The dot-product instructions through inline asm: with the intrinsics GCC 12
 * keeps the accumulator arrays in memory (a store per instruction). */
__attribute__((target("avx512f,avx512vnni"), always_inline)) static inline __m512i
dpbusd(__m512i acc, __m512i u8, __m512i s8)
{
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8));
    return acc;
}

/* 16 outputs to c, of which `left` (fewer at the end of N) are stored, or
 * added to c's (accum). */
__attribute__((target("avx512f"), always_inline)) static inline void store16(float *c, int left, __m512 v,
                                                                             int accum)
{
    /* whole vectors unmasked: a later full-width load of c (the gate math
     * right after a batch-1 product) can take the value from the store */
    if (left >= 16) {
        if (accum) v = _mm512_add_ps(v, _mm512_loadu_ps(c));
        _mm512_storeu_ps(c, v);
        return;
    }
    const __mmask16 mk = (__mmask16)((1u << left) - 1u);
    if (accum) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, c));
    _mm512_mask_storeu_ps(c, mk, v);
}

/* int32 sums of u8 rows (scale, zero point / 128 at sz) times int8 W to
 * float: (acc - z * sum_k w) * s * scale, outputs j ... j + 15. The fused
 * multiply-add takes z * comp exactly and rounds once. */
__attribute__((target("avx512f"))) static inline __m512 i8_dequant(const frnn_qmat *m, __m512i acc,
                                                                   const float *sz, size_t j)
{
    return _mm512_mul_ps(_mm512_fnmadd_ps(_mm512_set1_ps(sz[1]), _mm512_loadu_ps(m->comp + j), _mm512_cvtepi32_ps(acc)),
                         _mm512_mul_ps(_mm512_set1_ps(sz[0]), _mm512_loadu_ps(m->scale + j)));
}

/* R rows x NB blocks of 16 outputs, one function per (R, NB) with arrays of
 * exactly that size, so the accumulators live in registers. */
/* The R x NB accumulators of a micro-kernel out to C, VAL (an expression
 * in r, a and j, the first output) per 16 outputs, masked at N. */
#define Q_STORE_ALL(R, NB, VAL)                                                                 \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                         \
        _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++) {                                  \
            const size_t j = (b0 + a) * 16;                                                     \
            store16(C + (size_t)(r0 + r) * ldc + j, m->N - (int)j, VAL, m->accum);              \
        }

#define Q_MICRO(NAME, TARGET, ACC_T, ZERO, LOADW, STEP, STORE, R, NB)                             \
    __attribute__((target(TARGET))) static void NAME##_##R##x##NB(                              \
        const frnn_qmat *m, size_t b0, size_t kg, const void *qa, size_t qld, int r0,           \
        const float *sa, float *C, int ldc)                                                     \
    {                                                                                           \
        ACC_T acc[R][NB];                                                                       \
        (void)sa;                                                                               \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                     \
            _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++) acc[r][a] = ZERO;              \
        const char *hbase = (const char *)qa + (size_t)r0 * qld;                                \
        for (size_t q = 0; q < kg; q++) {                                                       \
            ACC_T wv[NB];                                                                       \
            _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++) wv[a] = LOADW;                 \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                               \
                const __m512i hv = _mm512_set1_epi32(*(const int *)(hbase + r * qld + q * 4));  \
                _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++) acc[r][a] = STEP;          \
            }                                                                                   \
        }                                                                                       \
        Q_STORE_ALL(R, NB, STORE);                                                              \
    }

#define I8_ARGS(R, NB) (mk_i8, "avx512f,avx512bw,avx512vnni", __m512i, _mm512_setzero_si512(),  \
        _mm512_loadu_si512((const int8_t *)m->data + ((b0 + a) * kg + q) * 64),                 \
        dpbusd(acc[r][a], hv, wv[a]),                                                            \
        i8_dequant(m, acc[r][a], sa + 2 * (size_t)(r0 + r), j), R, NB)
/* hsym: u8 W times s8 activations */
#define I8S_ARGS(R, NB) (mk_i8s, "avx512f,avx512bw,avx512vnni", __m512i, _mm512_setzero_si512(), \
        _mm512_loadu_si512((const uint8_t *)m->data + ((b0 + a) * kg + q) * 64),                \
        dpbusd(acc[r][a], wv[a], hv),                                                            \
        i8_dequant(m, acc[r][a], sa + 2 * (size_t)(r0 + r), j), R, NB)
#define Q_APPLY(F, A) F A
#define Q_ALL(ARGS)                                                                             \
    Q_APPLY(Q_MICRO, ARGS(1, 1)) Q_APPLY(Q_MICRO, ARGS(1, 8)) Q_APPLY(Q_MICRO, ARGS(1, 4))      \
    Q_APPLY(Q_MICRO, ARGS(2, 4)) Q_APPLY(Q_MICRO, ARGS(3, 4)) Q_APPLY(Q_MICRO, ARGS(4, 4))      \
    Q_APPLY(Q_MICRO, ARGS(5, 4)) Q_APPLY(Q_MICRO, ARGS(6, 4))
Q_ALL(I8_ARGS)
Q_ALL(I8S_ARGS)

/* bf16 through plain FMAs: a bf16 pair (k even in the low half of each
 * 32-bit word, k odd in the high half) becomes two fp32 vectors with one
 * shift and one mask, and the products are exact in fp32. On CPUs where
 * vdpbf16ps issues at a fraction of the FMA rate this is the faster way:
 * two FMA ports for 32 multiply-adds of a 64-byte weight load. */
#define BF16C_MICRO(R, NB)                                                                       \
    __attribute__((target("avx512f"))) static void mk_bf16c_##R##x##NB(                         \
        const frnn_qmat *m, size_t b0, size_t kg, const void *qa, size_t qld, int r0,           \
        const float *sa, float *C, int ldc)                                                     \
    {                                                                                           \
        __m512 acc[R][NB];                                                                      \
        (void)sa;                                                                               \
        const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);                                 \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                     \
            _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++) acc[r][a] = _mm512_setzero_ps(); \
        const char *hbase = (const char *)qa + (size_t)r0 * qld;                                \
        const uint16_t *wd = (const uint16_t *)m->data;                                         \
        for (size_t q = 0; q < kg; q++) {                                                       \
            __m512 we[NB], wo[NB];                                                              \
            _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++) {                              \
                const __m512i w = _mm512_loadu_si512(wd + ((b0 + a) * kg + q) * 32);           \
                we[a] = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));                          \
                wo[a] = _mm512_castsi512_ps(_mm512_and_si512(w, hi));                           \
            }                                                                                   \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                               \
                const __m512i hp = _mm512_set1_epi32(*(const int *)(hbase + r * qld + q * 4));  \
                const __m512 he = _mm512_castsi512_ps(_mm512_slli_epi32(hp, 16));                \
                const __m512 ho = _mm512_castsi512_ps(_mm512_and_si512(hp, hi));                 \
                _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++)                            \
                    acc[r][a] = _mm512_fmadd_ps(wo[a], ho, _mm512_fmadd_ps(we[a], he, acc[r][a])); \
            }                                                                                   \
        }                                                                                       \
        Q_STORE_ALL(R, NB, acc[r][a]);                                                          \
    }
BF16C_MICRO(1, 1) BF16C_MICRO(1, 8) BF16C_MICRO(1, 4) BF16C_MICRO(2, 4) BF16C_MICRO(3, 4)
BF16C_MICRO(4, 4)

/* Batch-1 steps on block-quantized h (frnn_hq_gemv): NB blocks of 16
 * outputs whose hidden units share one FRNN_HBLK block (so one K order),
 * K blocks from kb0 on, wrapping. */
#define HQ_MICRO(NB)                                                                             \
    __attribute__((target("avx512f,avx512bw,avx512vnni"))) static void hq_1x##NB(              \
        const frnn_qmat *m, size_t b0, size_t kg, const char *hq, int nkb, int kb0, float *C)   \
    {                                                                                           \
        const char *hd = hq + (size_t)nkb * 64;                                                 \
        const uint8_t *W = (const uint8_t *)m->data;                                            \
        __m512 f[NB];                                                                           \
        _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++) f[a] = _mm512_setzero_ps();        \
        for (int i = 0, kb = kb0; i < nkb; i++, kb = kb + 1 == nkb ? 0 : kb + 1) {              \
            const size_t q0 = (size_t)kb * (FRNN_HBLK / 4);                                     \
            const size_t q1 = q0 + FRNN_HBLK / 4 < kg ? q0 + FRNN_HBLK / 4 : kg;                \
            __m512i acc[NB];                                                                    \
            _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++) acc[a] = _mm512_setzero_si512(); \
            for (size_t q = q0; q < q1; q++) {                                                  \
                const __m512i hv = _mm512_set1_epi32(*(const int *)(hd + q * 4));               \
                _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++) acc[a] = dpbusd(           \
                    acc[a], _mm512_loadu_si512(W + ((b0 + a) * kg + q) * 64), hv);              \
            }                                                                                   \
            const float *mt = (const float *)(hq + (size_t)kb * 64);                            \
            const __m512 sv = _mm512_set1_ps(mt[0]);                                            \
            const __m512i cv = _mm512_set1_epi32(((const int32_t *)mt)[1]);                     \
            _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++)                                \
                f[a] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc[a], cv)), sv, f[a]); \
        }                                                                                       \
        _Pragma("GCC unroll 8") for (int a = 0; a < NB; a++) {                                  \
            const size_t j = (b0 + a) * 16;                                                     \
            store16(C + j, m->N - (int)j, _mm512_mul_ps(f[a], _mm512_loadu_ps(m->scale + j)), 0); \
        }                                                                                       \
    }
HQ_MICRO(8) HQ_MICRO(4) HQ_MICRO(1)

/* Rows in chunks of QMC so a chunk's quantized activations stay in L2 while
 * the weight panels stream past; per chunk, groups of QB blocks x QR rows. */
#define QMC 96
#define Q_DRIVER(NAME, MK, TARGET, QRV)                                                               \
    __attribute__((target(TARGET))) static void NAME(const frnn_qmat *m, int M, const void *qa,  \
                                                     size_t qld, const float *sa, float *C, int ldc, \
                                                     size_t bb, size_t nb)                       \
    {                                                                                            \
        const size_t kg = kgroups(m->wtype, m->K);                                               \
        size_t b1 = bb;                                                                          \
        if (M == 1)                                                                              \
            for (; b1 + QB1 <= nb; b1 += QB1) MK##_1x8(m, b1, kg, qa, qld, 0, sa, C, ldc);        \
        for (int m0 = 0; m0 < M; m0 += QMC) {                                                    \
            const int m1 = m0 + QMC < M ? m0 + QMC : M;                                          \
            for (size_t b0 = b1; b0 < nb; b0 += QB) {                                            \
                const int full = b0 + QB <= nb;                                                  \
                for (int r0 = m0; r0 < m1; r0 += QRV) {                                           \
                    const int R = m1 - r0 < QRV ? m1 - r0 : QRV;                                   \
                    if (full) {                                                                  \
                        switch (R) {                                                             \
                        case 1: MK##_1x4(m, b0, kg, qa, qld, r0, sa, C, ldc); break;            \
                        case 2: MK##_2x4(m, b0, kg, qa, qld, r0, sa, C, ldc); break;            \
                        case 3: MK##_3x4(m, b0, kg, qa, qld, r0, sa, C, ldc); break;            \
                        case 4: MK##_4x4(m, b0, kg, qa, qld, r0, sa, C, ldc); break;            \
                        case 5: MK##_5x4(m, b0, kg, qa, qld, r0, sa, C, ldc); break;            \
                        default: MK##_6x4(m, b0, kg, qa, qld, r0, sa, C, ldc); break;          \
                        }                                                                        \
                    } else {                                                                     \
                        for (size_t b = b0; b < nb; b++)                                         \
                            for (int r = r0; r < r0 + R; r++) MK##_1x1(m, b, kg, qa, qld, r, sa, C, ldc); \
                    }                                                                            \
                }                                                                                \
            }                                                                                    \
        }                                                                                        \
    }

Q_DRIVER(qgemm_i8_native, mk_i8, "avx512f,avx512bw,avx512vnni", QR)
Q_DRIVER(qgemm_i8s_native, mk_i8s, "avx512f,avx512bw,avx512vnni", QR)
/* rows 4 at a time: two converted vectors per block leave no room for more */
#define mk_bf16c_5x4 mk_bf16c_4x4
#define mk_bf16c_6x4 mk_bf16c_4x4
Q_DRIVER(qgemm_bf16c_native, mk_bf16c, "avx512f", 4)

static void qgemm_vec(const frnn_qmat *m, int M, const void *qa, size_t qld, const float *sa, float *C,
                      int ldc, size_t bb, size_t nb)
{
    if (m->wtype == FRNN_W_BF16) qgemm_bf16c_native(m, M, qa, qld, sa, C, ldc, bb, nb);
    else if (m->hsym) qgemm_i8s_native(m, M, qa, qld, sa, C, ldc, bb, nb);
    else qgemm_i8_native(m, M, qa, qld, sa, C, ldc, bb, nb);
}

/* -- AMX tiles (tdpbusd / tdpbf16ps) for whole 16-row, 32-output tiles ------
 * The packed weights [N/16][K/g][16][g] are already the B-tile layout: 16
 * K-groups of a block are one 16 x 64-byte tile. The quantized rows are the
 * A tiles. Four accumulator tiles: 32 rows x 32 outputs per K step. */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static int g_amx = 0;          /* 0 unknown, 1 usable, -1 not */
static int g_amx_off = 0;      /* tests / FASTRNN_AMX=0 */
void frnn_q_force_no_amx(int on) { __atomic_store_n(&g_amx_off, on, __ATOMIC_RELAXED); }

static int amx_init(void)
{
    __builtin_cpu_init();
    const char *e = getenv("FASTRNN_AMX");
    if (e && e[0] == '0') return -1;
    /* CPUID.(7,0):EDX bits 22 (bf16), 24 (tile), 25 (int8) */
    unsigned int a, b, c, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    if (!((d >> 22) & 1) || !((d >> 24) & 1) || !((d >> 25) & 1)) return -1;
#if defined(__linux__) && defined(SYS_arch_prctl)
    /* the kernel must enable the tile state for this process */
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return -1;
    return 1;
#else
    return -1;   /* no way to ask for the tile state here: vector kernels only */
#endif
}

int frnn_q_amx(void)
{
    int st = __atomic_load_n(&g_amx, __ATOMIC_ACQUIRE);
    if (!st) {
        st = amx_init();
        __atomic_store_n(&g_amx, st, __ATOMIC_RELEASE);
    }
    return st > 0;
}

static int amx_usable(const frnn_qmat *m)
{
    return !__atomic_load_n(&g_amx_off, __ATOMIC_RELAXED) && kgroups(m->wtype, m->K) % 16 == 0 &&
           frnn_q_amx();
}

/* The tile configuration this thread has loaded and kept (the M of
 * qgemm_amx_small's tiles), 0 for none: the batch-1 steps of a time loop
 * call qgemm_amx_small a few times per step with the same M, and loading
 * the configuration and releasing the tiles at every call cost about as
 * much as a call's products. frnn_q_release_tiles() ends it. */
static __thread int g_tiles_kept = 0;

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

/* A 16 x 16 product tile stored in buf (int32 or fp32) to rows [0, rows) of
 * C at column j (int8: dequantized with the rows' scales sa), masked at N. */
__attribute__((target("avx512f"))) static void amx_emit(const frnn_qmat *m, const float *buf, int rows,
                                                        const float *sa, float *C, int ldc, size_t j)
{
    const int left = m->N - (int)j;
    const __mmask16 mk = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
    for (int r = 0; r < rows; r++) {
        __m512 v = _mm512_load_ps(buf + r * 16);
        if (m->wtype == FRNN_W_I8) v = i8_dequant(m, _mm512_castps_si512(v), sa + 2 * (size_t)r, j);
        if (m->accum) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, C + (size_t)r * ldc + j));
        _mm512_mask_storeu_ps(C + (size_t)r * ldc + j, mk, v);
    }
}

__attribute__((target("amx-tile,amx-int8,amx-bf16,avx512f"))) static void qgemm_amx(
    const frnn_qmat *m, int M, const void *qa, size_t qld, const float *sa, float *C, int ldc,
    size_t b0, size_t b1)
{
    amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
    g_tiles_kept = 0;
    const size_t kg = kgroups(m->wtype, m->K);
    const char *W = (const char *)m->data;
    const int i8 = m->wtype == FRNN_W_I8;
    float buf[16 * 16] __attribute__((aligned(64)));
    for (int r0 = 0; r0 < M; r0 += 16) {
        const int two_r = r0 + 32 <= M;
        for (size_t b = b0; b < b1; b += 2) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            const char *a0 = (const char *)qa + (size_t)r0 * qld;
            for (size_t q = 0; q < kg; q += 16) {
                _tile_loadd(4, a0 + q * 4, qld);
                _tile_loadd(6, W + (b * kg + q) * 64, 64);
                _tile_loadd(7, W + ((b + 1) * kg + q) * 64, 64);
                if (i8 && m->hsym) {
                    _tile_dpbsud(0, 4, 6);
                    _tile_dpbsud(1, 4, 7);
                } else if (i8) {
                    _tile_dpbusd(0, 4, 6);
                    _tile_dpbusd(1, 4, 7);
                } else {
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_dpbf16ps(1, 4, 7);
                }
                if (two_r) {
                    _tile_loadd(5, a0 + 16 * qld + q * 4, qld);
                    if (i8 && m->hsym) {
                        _tile_dpbsud(2, 5, 6);
                        _tile_dpbsud(3, 5, 7);
                    } else if (i8) {
                        _tile_dpbusd(2, 5, 6);
                        _tile_dpbusd(3, 5, 7);
                    } else {
                        _tile_dpbf16ps(2, 5, 6);
                        _tile_dpbf16ps(3, 5, 7);
                    }
                }
            }
            /* out of the tiles (int8: dequantized) into C, masked at N */
            for (int t = 0; t < (two_r ? 4 : 2); t++) {
                const size_t blk = b + (size_t)(t & 1);
                const int rr = r0 + (t >> 1) * 16;
                switch (t) {
                case 0: _tile_stored(0, buf, 64); break;
                case 1: _tile_stored(1, buf, 64); break;
                case 2: _tile_stored(2, buf, 64); break;
                default: _tile_stored(3, buf, 64); break;
                }
                amx_emit(m, buf, 16, sa + 2 * (size_t)rr, C + (size_t)rr * ldc, ldc, blk * 16);
            }
        }
        if (two_r) r0 += 16;
    }
    _tile_release();
}

/* At most 16 rows (a batch-1 step): A and C tiles of M rows, two blocks
 * of 16 outputs per pass and two K slices per iteration, so that the four B
 * tiles in flight never wait for a product still reading their register.
 * For bf16 the tiles stream W faster than the vector kernels even for one
 * row. */
#define AMX_TDP(C, A, B) do { if (i8) _tile_dpbusd(C, A, B); else _tile_dpbf16ps(C, A, B); } while (0)
__attribute__((target("amx-tile,amx-int8,amx-bf16,avx512f"))) static void qgemm_amx_small(
    const frnn_qmat *m, int M, const void *qa, size_t qld, const float *sa, float *C, int ldc,
    size_t b0, size_t b1)
{
    if (g_tiles_kept != M) {
        amx_cfg cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.palette = 1;
        for (int t = 0; t < 8; t++) {
            cfg.colsb[t] = 64;
            cfg.rows[t] = t < 4 ? (uint8_t)M : 16;   /* 0, 1 C and 2, 3 A: M rows; 4-7 B */
        }
        _tile_loadconfig(&cfg);
        g_tiles_kept = M;
    }
    const size_t kg = kgroups(m->wtype, m->K);
    const char *W = (const char *)m->data;
    const char *A = (const char *)qa;
    const int i8 = m->wtype == FRNN_W_I8;
    float buf[16 * 16] __attribute__((aligned(64)));
    for (size_t b = b0; b < b1; b += 2) {
        const int two = b + 1 < b1;
        _tile_zero(0);
        _tile_zero(1);
        for (size_t q = 0; q < kg; q += 32) {
            _tile_loadd(2, A + q * 4, qld);
            _tile_loadd(4, W + (b * kg + q) * 64, 64);
            if (two) _tile_loadd(5, W + ((b + 1) * kg + q) * 64, 64);
            AMX_TDP(0, 2, 4);
            if (two) AMX_TDP(1, 2, 5);
            if (q + 16 < kg) {
                _tile_loadd(3, A + (q + 16) * 4, qld);
                _tile_loadd(6, W + (b * kg + q + 16) * 64, 64);
                if (two) _tile_loadd(7, W + ((b + 1) * kg + q + 16) * 64, 64);
                AMX_TDP(0, 3, 6);
                if (two) AMX_TDP(1, 3, 7);
            }
        }
        for (int t = 0; t < 1 + two; t++) {
            if (t == 0) _tile_stored(0, buf, 64);
            else _tile_stored(1, buf, 64);
            amx_emit(m, buf, M, sa, C, ldc, (b + (size_t)t) * 16);
        }
    }
}

__attribute__((target("amx-tile"))) static void tiles_release(void) { _tile_release(); }

void frnn_q_release_tiles(void)
{
    if (g_tiles_kept) {
        tiles_release();
        g_tiles_kept = 0;
    }
}
#else
int frnn_q_amx(void) { return 0; }
void frnn_q_force_no_amx(int on) { (void)on; }
void frnn_q_release_tiles(void) {}
#endif

/* One thread's share: rows [r0, r1) x blocks [b0, b1). */
typedef struct {
    const frnn_qmat *m;
    int M, ldc, native, split_rows;
    const void *qa;
    size_t qld;
    const float *sa;
    float *C;
    const float *A;        /* not NULL: the threads quantize A into qa first */
    int lda;
    long qnext, qdone;     /* shares of A's rows claimed / quantized (few rows, threaded) */
    frnn_qmat m2;          /* m->xres: the residual pass (m, adding to C) */
    const void *qa2;       /* ... and its quantized rows; NULL: one pass */
    const float *sa2;
} qjob;

static void qjob_init(qjob *j, const frnn_qmat *m, int M, const void *qa, size_t qld, const float *sa,
                      float *C, int ldc)
{
    j->m = m;
    j->M = M;
    j->ldc = ldc;
    j->qa = qa;
    j->qld = qld;
    j->sa = sa;
    j->C = C;
#ifdef FRNN_Q_X86
    j->native = use_native(m->wtype);
#else
    j->native = 0;
#endif
    j->split_rows = 0;
    j->A = NULL;
    j->qa2 = NULL;
    j->sa2 = NULL;
}

/* Rows [r0, r1) x blocks [b0, b1) of one pass: W m, quantized rows qa / sa. */
static void qpass_part(const qjob *j, const frnn_qmat *m, const void *qa_, const float *sa_, int r0, int r1,
                       size_t b0, size_t b1)
{
    const char *qa = (const char *)qa_ + (size_t)r0 * j->qld;
    const float *sa = sa_ + 2 * (size_t)r0;
    float *C = j->C + (size_t)r0 * j->ldc;
#ifdef FRNN_Q_X86
    if (j->native) {
        const int amx = amx_usable(m);
        int ra = r0;
        size_t ba = b1;
        if (amx) {
            /* whole tiles on AMX: rows in 16s, blocks in pairs */
            const int m16 = ((r1 - r0) / 16) * 16;
            const size_t npair = (b1 - b0) / 2;
            if (m16 > 0 && npair > 0) {
                qgemm_amx(m, m16, qa, j->qld, sa, C, j->ldc, b0, b0 + 2 * npair);
                ra = r0 + m16;
                ba = b0 + 2 * npair;
            }
        }
        /* the rest: for the AMX rows the odd block; the rows left over (all
         * of them when there is no pair of blocks) on small tiles of at most
         * 16 rows, the most a tile holds */
        if (ra > r0 && ba < b1) qgemm_vec(m, ra - r0, qa, j->qld, sa, C, j->ldc, ba, b1);
        if (amx && m->wtype == FRNN_W_BF16) {
            for (int rs = ra; rs < r1; rs += 16) {
                const size_t o = (size_t)(rs - r0);
                qgemm_amx_small(m, r1 - rs < 16 ? r1 - rs : 16, qa + o * j->qld, j->qld, sa + 2 * o,
                                C + o * j->ldc, j->ldc, b0, b1);
            }
        } else if (ra < r1) {
            const size_t o = (size_t)(ra - r0);
            qgemm_vec(m, r1 - ra, qa + o * j->qld, j->qld, sa + 2 * o, C + o * j->ldc, j->ldc, b0, b1);
        }
        return;
    }
#endif
    qgemm_portable(m, r1 - r0, qa, j->qld, sa, C, j->ldc, b0, b1);
}

/* A 96-row chunk's C stays cached between the two passes. */
#define QRES_CHUNK 96

static void qjob_part(const qjob *j, int r0, int r1, size_t b0, size_t b1)
{
    if (r1 <= r0 || b1 <= b0) return;
    if (!j->qa2) {
        qpass_part(j, j->m, j->qa, j->sa, r0, r1, b0, b1);
        return;
    }
    for (int c0 = r0; c0 < r1; c0 += QRES_CHUNK) {
        const int c1 = r1 - c0 < QRES_CHUNK ? r1 : c0 + QRES_CHUNK;
        qpass_part(j, j->m, j->qa, j->sa, c0, c1, b0, b1);
        qpass_part(j, &j->m2, j->qa2, j->sa2, c0, c1, b0, b1);
    }
}

size_t frnn_qquantize(const frnn_qmat *m, int M, const float *A, int lda, void *scratch, float **sa)
{
    return quantize_rows(m, M, A, lda, scratch, sa);
}

void frnn_qgemm_part(const frnn_qmat *m, int M, const void *qa, size_t qld, const float *sa,
                     float *C, int ldc, size_t b0, size_t b1)
{
    qjob j;
    qjob_init(&j, m, M, qa, qld, sa, C, ldc);
    qjob_part(&j, 0, M, b0, b1);
}

static void qjob_run(void *arg, int tid, int nt)
{
    qjob *j = (qjob *)arg;
    const size_t nb = nblocks(j->m->N);
    if (j->split_rows) {
        /* Many rows: each thread a band of rows (multiples of 8), which it
         * quantizes itself. */
        const int per = ((j->M + nt - 1) / nt + 7) & ~7;
        const int r0 = tid * per, r1 = r0 + per < j->M ? r0 + per : j->M;
        if (j->A && r0 < r1) quantize_rows_part(j->m, j->M, r0, r1, j->A, j->lda, (void *)j->qa);
        qjob_part(j, r0, r1, 0, nb);
    } else {
        if (j->A) {
            /* every thread needs all rows: the nt shares are claimed on
             * demand, then each waits for the others' (all claimed by then,
             * so only by threads already running: the caller never waits for
             * a worker that has not started, see frnn_team_run) */
            for (long c; (c = __atomic_fetch_add(&j->qnext, 1, __ATOMIC_RELAXED)) < nt;) {
                quantize_rows_part(j->m, j->M, (int)((long)j->M * c / nt), (int)((long)j->M * (c + 1) / nt),
                                   j->A, j->lda, (void *)j->qa);
                __atomic_add_fetch(&j->qdone, 1, __ATOMIC_RELEASE);
            }
            for (int spins = 0; __atomic_load_n(&j->qdone, __ATOMIC_ACQUIRE) < nt; spins++) {
                if (spins < 2000) cpu_relax();
                else sched_yield();   /* oversubscribed: let the one quantizing run */
            }
        }
        /* Few rows (a step): each thread a slice of the outputs, whole groups of 4 blocks,
         * so its slice of W stays in its own cache across steps. */
        const size_t ng = (nb + 3) / 4;
        const size_t g0 = ng * tid / nt, g1 = ng * (tid + 1) / nt;
        qjob_part(j, 0, j->M, g0 * 4, g1 * 4 < nb ? g1 * 4 : nb);
    }
    frnn_q_release_tiles();
}

void frnn_qgemm(const frnn_qmat *m, int M, const float *A, int lda, float *C, int ldc, void *scratch,
                int nthreads, int by_cols)
{
    if (M <= 0 || m->N <= 0) return;
    qjob j;
    const size_t qld = quantized_ld(m);
    qjob_init(&j, m, M, scratch, qld, (const float *)((char *)scratch + (size_t)M * qld), C, ldc);
    j.split_rows = !by_cols && M >= 32 * nthreads;
    if (has_resid(m)) {
        const char *res = (const char *)scratch + resid_offset(m, M);
        j.m2 = *m;
        j.m2.accum = 1;
        j.qa2 = res;
        j.sa2 = (const float *)(res + (size_t)M * qld);
    }
    /* Tiny products are not worth waking the team. */
    if ((double)M * m->N * m->K < 1048576.0) nthreads = 1;
    if (nthreads > 1 && M >= 64) {
        /* the threads quantize A too (an input projection's rows are many) */
        j.A = A;
        j.lda = lda;
        j.qnext = j.qdone = 0;
    } else {
        quantize_rows_part(m, M, 0, M, A, lda, scratch);
    }
    if (nthreads > 1) frnn_team_run(qjob_run, &j, nthreads);
    else qjob_run(&j, 0, 1);
}

/* -- batch-1 block-quantized h: portable loops and dispatch ------------------ */

void frnn_hq_quantize(const float *h, int k0, int k1, int K, void *hq)
{
    char *meta = (char *)hq;
    int8_t *q = (int8_t *)(meta + hq_nblocks(K) * 64);
    for (int a = k0; a < k1; a += FRNN_HBLK) {
        const int e = a + FRNN_HBLK < k1 ? a + FRNN_HBLK : k1;
        float sc;
        int32_t qsum;
        sym_quant(h + a, e - a, q + a, &sc, &qsum);
        hq_meta(meta + (size_t)(a / FRNN_HBLK) * 64, sc, qsum);
    }
}

/* Output block b's sums, the native kernels' numbers one output at a time. */
static void hq_block_portable(const frnn_qmat *m, size_t b, size_t kg, const char *hq, int nkb, int kb0,
                              float *C)
{
    const int8_t *hd = (const int8_t *)(hq + (size_t)nkb * 64);
    const uint8_t *w = (const uint8_t *)m->data + b * kg * 64;
    for (int u = 0; u < 16 && b * 16 + u < (size_t)m->N; u++) {
        float f = 0.0f;
        for (int i = 0, kb = kb0; i < nkb; i++, kb = kb + 1 == nkb ? 0 : kb + 1) {
            const size_t q0 = (size_t)kb * (FRNN_HBLK / 4);
            const size_t q1 = q0 + FRNN_HBLK / 4 < kg ? q0 + FRNN_HBLK / 4 : kg;
            int32_t acc = 0;
            for (size_t q = q0; q < q1; q++)
                for (int e = 0; e < 4; e++)
                    acc += (int32_t)w[(q * 16 + u) * 4 + e] * (int32_t)hd[q * 4 + e];
            float s;
            int32_t corr;
            memcpy(&s, hq + (size_t)kb * 64, 4);
            memcpy(&corr, hq + (size_t)kb * 64 + 4, 4);
            f = fmaf((float)(acc - corr), s, f);
        }
        C[b * 16 + u] = f * m->scale[b * 16 + u];
    }
}

void frnn_hq_gemv(const frnn_qmat *m, const void *hq_, float *C, size_t b0, size_t b1, int rev)
{
    const char *hq = (const char *)hq_;
    const size_t kg = kgroups(FRNN_W_I8, m->K);
    const int nkb = (int)hq_nblocks(m->K);
    /* the rows are [unit block][gate][16]: an FRNN_HBLK block of units
     * owns seg consecutive output blocks */
    const size_t G = (size_t)(m->N / m->K), seg = G * (FRNN_HBLK / 16);
#ifdef FRNN_Q_X86
    const int native = use_native(FRNN_W_I8);
#endif
    size_t b = rev ? b1 : b0;
    while (rev ? b > b0 : b < b1) {
        /* the next run of up to 8 blocks inside one segment */
        size_t lo, hi;
        if (rev) {
            hi = b;
            const size_t sstart = (hi - 1) / seg * seg;
            lo = hi >= sstart + 8 ? hi - 8 : sstart;
            if (lo < b0) lo = b0;
            b = lo;
        } else {
            lo = b;
            const size_t send = (lo / seg + 1) * seg;
            hi = lo + 8 <= send ? lo + 8 : send;
            if (hi > b1) hi = b1;
            b = hi;
        }
        const int kb0 = (int)(lo / seg);
#ifdef FRNN_Q_X86
        if (native) {
            size_t x = lo;
            if (hi - x == 8) { hq_1x8(m, x, kg, hq, nkb, kb0, C); x += 8; }
            for (; x + 4 <= hi; x += 4) hq_1x4(m, x, kg, hq, nkb, kb0, C);
            for (; x < hi; x++) hq_1x1(m, x, kg, hq, nkb, kb0, C);
            continue;
        }
#endif
        for (size_t x = lo; x < hi; x++) hq_block_portable(m, x, kg, hq, nkb, kb0, C);
    }
}
