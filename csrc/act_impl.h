/* Vectorised activations, built once per ISA (included by kern_*.c).
 * exp: Cephes-style range reduction x = n ln2 + r, degree-6 polynomial on r,
 * scaled by 2^n; about 1 ulp. sigmoid = 1 / (1 + exp(-x)). tanh: odd
 * polynomial for |x| < 0.625 (keeps relative accuracy near 0), else
 * 1 - 2 / (exp(2|x|) + 1) with the sign restored. All within 1e-6 absolute
 * of libm; NaN propagates; exp overflows to +inf and underflows to 0 where
 * expf does, so sigmoid and tanh saturate to exactly 0, 1 and +-1. */

static inline __attribute__((always_inline)) V FN(vexp)(V x0) {
    V x = vmax_keepnan(x0, vset1(-87.3f));
    x = vmin_keepnan(x, vset1(88.0f));
    V n = vfloor(vfma(x, vset1(1.44269504088896341f), vset1(0.5f)));
    V r = vfma(n, vset1(-0.693359375f), x);
    r = vfma(n, vset1(2.12194440e-4f), r);
    V p = vset1(1.9875691500e-4f);
    p = vfma(p, r, vset1(1.3981999507e-3f));
    p = vfma(p, r, vset1(8.3334519073e-3f));
    p = vfma(p, r, vset1(4.1665795894e-2f));
    p = vfma(p, r, vset1(1.6666665459e-1f));
    p = vfma(p, r, vset1(5.0000001201e-1f));
    V y = vadd(vfma(p, vmul(r, r), r), vset1(1.0f));
    y = vmul(y, vpow2i(n));
    /* Past float range: exactly +inf / 0, as libm (so sigmoid(-inf) == 0). */
    y = vblend(vcmpgt(x0, vset1(88.72283f)), y, vset1(INFINITY));
    return vblend(vcmplt(x0, vset1(-87.33654f)), y, vset1(0.0f));
}

#if FRNN_LEVEL == 2
/* AVX-512: e = exp(-x) = 2^n p(r) with n = round(-x log2 e), r = -x - n ln2
 * and a degree-5 minimax p (2.1e-7 relative); vscalefps applies 2^n and
 * overflows to +inf / underflows to 0 by itself, so no clamping of n and no
 * fix-up blends (the gate kernels' hot path: about 17 operations). */
static inline __attribute__((always_inline)) V FN(vsigmoid)(V x) {
    x = vmin_keepnan(vmax_keepnan(x, vset1(-100.0f)), vset1(100.0f));
    V n = _mm512_roundscale_ps(vmul(x, vset1(-1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    V r = _mm512_fnmsub_ps(n, vset1(0.693359375f), x);       /* -x - n ln2_hi */
    r = _mm512_fnmadd_ps(n, vset1(-2.12194440e-4f), r);       /* ... - n ln2_lo */
    V p = vfma(vset1(0.008297654800117016f), r, vset1(0.04191538318991661f));
    p = vfma(p, r, vset1(0.16667574644088745f));
    p = vfma(p, r, vset1(0.49998894333839417f));
    p = vfma(p, r, vset1(0.9999997019767761f));
    p = vfma(p, r, vset1(1.0000001192092896f));
    V d = vadd(_mm512_scalef_ps(p, n), vset1(1.0f));
    /* 1/d: estimate plus one Newton step, skipped where d = +inf (result 0). */
    const __mmask16 fin = _mm512_cmp_ps_mask(d, vset1(INFINITY), _CMP_LT_OQ);
    V y = _mm512_rcp14_ps(d);
    return _mm512_mask_fmadd_ps(y, fin, _mm512_fnmadd_ps(d, y, vset1(1.0f)), y);
}
#else
static inline __attribute__((always_inline)) V FN(vsigmoid)(V x) {
    return vrecip_ge1(vadd(vset1(1.0f), FN(vexp)(vsub(vset1(0.0f), x))));
}
#endif

/* n independent sigmoids in place, computed stage by stage across all n:
 * one sigmoid is a chain of ~15 dependent operations, so the gate kernels
 * hand several over at once and the chains overlap instead of stalling. */
static inline __attribute__((always_inline)) void FN(vsigmoid_n)(const int n, V *x) {
#if FRNN_LEVEL == 2
    V nn[8], r[8], p[8];
#pragma GCC unroll 8
    for (int q = 0; q < n; q++) {
        x[q] = vmin_keepnan(vmax_keepnan(x[q], vset1(-100.0f)), vset1(100.0f));
        nn[q] = _mm512_roundscale_ps(vmul(x[q], vset1(-1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
#pragma GCC unroll 8
    for (int q = 0; q < n; q++) {
        r[q] = _mm512_fnmsub_ps(nn[q], vset1(0.693359375f), x[q]);
        r[q] = _mm512_fnmadd_ps(nn[q], vset1(-2.12194440e-4f), r[q]);
    }
#pragma GCC unroll 8
    for (int q = 0; q < n; q++) p[q] = vfma(vset1(0.008297654800117016f), r[q], vset1(0.04191538318991661f));
#pragma GCC unroll 8
    for (int q = 0; q < n; q++) p[q] = vfma(p[q], r[q], vset1(0.16667574644088745f));
#pragma GCC unroll 8
    for (int q = 0; q < n; q++) p[q] = vfma(p[q], r[q], vset1(0.49998894333839417f));
#pragma GCC unroll 8
    for (int q = 0; q < n; q++) p[q] = vfma(p[q], r[q], vset1(0.9999997019767761f));
#pragma GCC unroll 8
    for (int q = 0; q < n; q++) p[q] = vfma(p[q], r[q], vset1(1.0000001192092896f));
#pragma GCC unroll 8
    for (int q = 0; q < n; q++) {
        V d = vadd(_mm512_scalef_ps(p[q], nn[q]), vset1(1.0f));
        const __mmask16 fin = _mm512_cmp_ps_mask(d, vset1(INFINITY), _CMP_LT_OQ);
        V y = _mm512_rcp14_ps(d);
        x[q] = _mm512_mask_fmadd_ps(y, fin, _mm512_fnmadd_ps(d, y, vset1(1.0f)), y);
    }
#else
#pragma GCC unroll 8
    for (int q = 0; q < n; q++) x[q] = FN(vsigmoid)(x[q]);
#endif
}

/* tanh for the gate kernels: 2 sigmoid(2x) - 1, within 1e-6 absolute (but
 * not relative near 0, where vtanh below keeps full relative accuracy for
 * the general activation path). */
static inline __attribute__((always_inline)) V FN(vtanh_fast)(V x) {
    return vfma(vset1(2.0f), FN(vsigmoid)(vadd(x, x)), vset1(-1.0f));
}

static inline __attribute__((always_inline)) V FN(vtanh)(V x) {
    V ax = vabs(x);
    VM small = vcmplt(ax, vset1(0.625f));
    V z = vmul(x, x);
    V ps = vset1(-5.70498872745e-3f);
    ps = vfma(ps, z, vset1(2.06390887954e-2f));
    ps = vfma(ps, z, vset1(-5.37397155531e-2f));
    ps = vfma(ps, z, vset1(1.33314422036e-1f));
    ps = vfma(ps, z, vset1(-3.33332819422e-1f));
    ps = vfma(vmul(ps, z), x, x);
    V e = FN(vexp)(vadd(ax, ax));
    V big = vsub(vset1(1.0f), vmul(vset1(2.0f), vrecip_ge1(vadd(e, vset1(1.0f)))));
    big = vor(big, vsignbits(x));
    return vblend(small, big, ps);
}

static inline float FN(softplus1)(float x) {
    return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
}

/* Any supported activation on one vector. */
static inline __attribute__((always_inline)) V FN(vact)(const frnn_act *a, V x) {
    switch (a->kind) {
    case FRNN_ACT_SIGMOID: return FN(vsigmoid)(x);
    case FRNN_ACT_TANH: return FN(vtanh)(x);
    case FRNN_ACT_RELU: return vmax_keepnan(x, vset1(0.0f));
    case FRNN_ACT_AFFINE: return vfma(x, vset1(a->alpha), vset1(a->beta));
    case FRNN_ACT_LEAKYRELU: return vblend(vcmplt(x, vset1(0.0f)), x, vmul(x, vset1(a->alpha)));
    case FRNN_ACT_THRESHOLDEDRELU: return vblend(vcmpgt(x, vset1(a->alpha)), vset1(0.0f), x);
    case FRNN_ACT_SCALEDTANH: return vmul(vset1(a->alpha), FN(vtanh)(vmul(x, vset1(a->beta))));
    case FRNN_ACT_HARDSIGMOID:
        return vmin_keepnan(vmax_keepnan(vfma(x, vset1(a->alpha), vset1(a->beta)), vset1(0.0f)), vset1(1.0f));
    case FRNN_ACT_ELU:
        return vblend(vcmplt(x, vset1(0.0f)), x,
                      vmul(vset1(a->alpha), vsub(FN(vexp)(x), vset1(1.0f))));
    case FRNN_ACT_SOFTSIGN: return vdiv(x, vadd(vset1(1.0f), vabs(x)));
    case FRNN_ACT_SOFTPLUS: {
        float t[VL];
        vstore(t, x);
        for (int l = 0; l < VL; l++) t[l] = FN(softplus1)(t[l]);
        return vload(t);
    }
    default: return x;
    }
}

static void FN(apply_act)(const frnn_act *a, float *v, int n) {
    int k = 0;
    if (a->kind == FRNN_ACT_GATE_TANH || a->kind == FRNN_ACT_GATE_SIGMOID) {
        const int tanh = a->kind == FRNN_ACT_GATE_TANH;
        for (; k < n; k += 8 * VL) {
            V x[8];
            for (int q = 0; q < 8; q++) {
                const int kq = k + q * VL;
                x[q] = kq + VL <= n ? vload(v + kq) : kq < n ? vloadt(v + kq, vtail(n - kq)) : vset1(0.0f);
            }
            if (tanh) {
                for (int q = 0; q < 8; q++) x[q] = FN(vtanh_fast)(x[q]);
            } else {
                FN(vsigmoid_n)(8, x);
            }
            for (int q = 0; q < 8; q++) {
                const int kq = k + q * VL;
                if (kq + VL <= n) vstore(v + kq, x[q]);
                else if (kq < n) vstoret(v + kq, x[q], vtail(n - kq));
            }
        }
        return;
    }
    for (; k + VL <= n; k += VL) vstore(v + k, FN(vact)(a, vload(v + k)));
    if (k < n) {
        VTAIL m = vtail(n - k);
        vstoret(v + k, FN(vact)(a, vloadt(v + k, m)), m);
    }
}
