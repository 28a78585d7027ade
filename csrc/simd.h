/* Thin vector abstraction so one kernel source builds for every ISA.
 * FRNN_LEVEL selects it: 0 scalar, 1 AVX2+FMA, 2 AVX-512F.
 * vmax_keepnan/vmin_keepnan keep a NaN from their first argument: the
 * activations must propagate NaN like torch does, and plain max/min may not. */
#ifndef FRNN_SIMD_H
#define FRNN_SIMD_H
#include <math.h>
#include <stdint.h>

#if FRNN_LEVEL == 2
#include <immintrin.h>
typedef __m512 V;
typedef __mmask16 VM;        /* comparison result */
typedef __mmask16 VTAIL;     /* tail mask */
#define VL 16
#define vload(p) _mm512_loadu_ps(p)
#define vstore(p, v) _mm512_storeu_ps((p), (v))
#define vtail(n) ((__mmask16)((1u << (n)) - 1u))
#define vloadt(p, m) _mm512_maskz_loadu_ps((m), (p))
#define vstoret(p, v, m) _mm512_mask_storeu_ps((p), (m), (v))
#define vset1(x) _mm512_set1_ps(x)
#define vadd _mm512_add_ps
#define vsub _mm512_sub_ps
#define vmul _mm512_mul_ps
#define vdiv _mm512_div_ps
#define vfma(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define vmax_keepnan(x, lo) _mm512_max_ps((lo), (x))
#define vmin_keepnan(x, hi) _mm512_min_ps((hi), (x))
#define vfloor(x) _mm512_roundscale_ps((x), _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)
#define vabs(x) _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)))
#define vsignbits(x) _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u)))
#define vor(a, b) _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)))
#define vcmplt(a, b) _mm512_cmp_ps_mask((a), (b), _CMP_LT_OQ)
#define vcmpgt(a, b) _mm512_cmp_ps_mask((a), (b), _CMP_GT_OQ)
#define vblend(m, f, t) _mm512_mask_blend_ps((m), (f), (t))
/* 1/d for d >= 1 (finite or +inf): reciprocal estimate plus one Newton step
 * (~2^-28 relative), far cheaper than a division; +inf gives 0. */
static inline V vrecip_ge1(V d) {
    const __mmask16 huge = _mm512_cmp_ps_mask(d, _mm512_set1_ps(1e38f), _CMP_GT_OQ);
    d = _mm512_min_ps(_mm512_set1_ps(1e38f), d);   /* NaN stays NaN */
    V r = _mm512_rcp14_ps(d);
    r = _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.0f)), r);   /* r + r(1 - dr) */
    return _mm512_mask_blend_ps(huge, r, _mm512_setzero_ps());
}
static inline V vpow2i(V n) { /* 2^n for integral n in [-126, 127] */
    __m512i i = _mm512_cvttps_epi32(n);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(i, _mm512_set1_epi32(127)), 23));
}
#elif FRNN_LEVEL == 1
#include <immintrin.h>
typedef __m256 V;
typedef __m256 VM;
typedef __m256i VTAIL;
#define VL 8
#define vload(p) _mm256_loadu_ps(p)
#define vstore(p, v) _mm256_storeu_ps((p), (v))
#define vtail(n) _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define vloadt(p, m) _mm256_maskload_ps((p), (m))
#define vstoret(p, v, m) _mm256_maskstore_ps((p), (m), (v))
#define vset1(x) _mm256_set1_ps(x)
#define vadd _mm256_add_ps
#define vsub _mm256_sub_ps
#define vmul _mm256_mul_ps
#define vdiv _mm256_div_ps
#define vfma(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define vmax_keepnan(x, lo) _mm256_max_ps((lo), (x))
#define vmin_keepnan(x, hi) _mm256_min_ps((hi), (x))
#define vfloor(x) _mm256_floor_ps(x)
#define vabs(x) _mm256_and_ps((x), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)))
#define vsignbits(x) _mm256_and_ps((x), _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u)))
#define vor(a, b) _mm256_or_ps((a), (b))
#define vcmplt(a, b) _mm256_cmp_ps((a), (b), _CMP_LT_OQ)
#define vcmpgt(a, b) _mm256_cmp_ps((a), (b), _CMP_GT_OQ)
#define vblend(m, f, t) _mm256_blendv_ps((f), (t), (m))
static inline V vrecip_ge1(V d) {
    const V huge = _mm256_cmp_ps(d, _mm256_set1_ps(1e38f), _CMP_GT_OQ);
    d = _mm256_min_ps(_mm256_set1_ps(1e38f), d);   /* NaN stays NaN */
    V r = _mm256_rcp_ps(d);   /* 12 bits: two Newton steps, r + r(1 - dr) */
    r = _mm256_fmadd_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(1.0f)), r);
    r = _mm256_fmadd_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(1.0f)), r);
    return _mm256_blendv_ps(r, _mm256_setzero_ps(), huge);
}
static inline V vpow2i(V n) {
    __m256i i = _mm256_cvttps_epi32(n);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(i, _mm256_set1_epi32(127)), 23));
}
#else
typedef float V;
typedef int VM;
typedef int VTAIL;
#define VL 1
#define vload(p) (*(p))
#define vstore(p, v) (*(p) = (v))
#define vtail(n) (n)
#define vloadt(p, m) ((void)(m), *(p))
#define vstoret(p, v, m) ((void)(m), *(p) = (v))
#define vset1(x) ((float)(x))
static inline float vadd(float a, float b) { return a + b; }
static inline float vsub(float a, float b) { return a - b; }
static inline float vmul(float a, float b) { return a * b; }
static inline float vdiv(float a, float b) { return a / b; }
static inline float vfma(float a, float b, float c) { return a * b + c; }
static inline float vmax_keepnan(float x, float lo) { return x < lo ? lo : x; }
static inline float vmin_keepnan(float x, float hi) { return x > hi ? hi : x; }
#define vfloor(x) floorf(x)
#define vabs(x) fabsf(x)
static inline float vsignbits(float x) { return signbit(x) ? -0.0f : 0.0f; }
static inline float vor(float a, float s) { return signbit(s) ? -a : a; } /* a >= 0 here */
#define vcmplt(a, b) ((a) < (b))
#define vcmpgt(a, b) ((a) > (b))
#define vblend(m, f, t) ((m) ? (t) : (f))
static inline float vrecip_ge1(float d) { return 1.0f / d; }
static inline float vpow2i(float n) {
    union { uint32_t u; float f; } b;
    if (!(n == n)) return n; /* NaN: casting it to int is undefined */
    b.u = (uint32_t)((int32_t)n + 127) << 23;
    return b.f;
}
#endif

#endif
