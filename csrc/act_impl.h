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

static inline __attribute__((always_inline)) V FN(vsigmoid)(V x) {
    return vrecip_ge1(vadd(vset1(1.0f), FN(vexp)(vsub(vset1(0.0f), x))));
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
    for (; k + VL <= n; k += VL) vstore(v + k, FN(vact)(a, vload(v + k)));
    if (k < n) {
        VTAIL m = vtail(n - k);
        vstoret(v + k, FN(vact)(a, vloadt(v + k, m)), m);
    }
}
