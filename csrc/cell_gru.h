/* GRU fused step kernels (included once per ISA by kern_*.c).
 *
 * PyTorch gate order (r, z, n):
 *   r_t = f(W_ir x_t + W_hr h_{t-1} + b_ir + b_hr)
 *   z_t = f(W_iz x_t + W_hz h_{t-1} + b_iz + b_hz)
 *   linear_before_reset (PyTorch):  n_t = g(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
 *   original (ONNX default):        n_t = g(W_in x_t + b_in + W_hn (r_t * h_{t-1}) + b_hn)
 *   h_t = (1 - z_t) * n_t + z_t * h_{t-1}  =  n_t + z_t * (h_{t-1} - n_t)
 * f, g are sigmoid, tanh by default; clip clamps every pre-activation.
 * The r/z biases are pre-added at load; b_hn stays separate in the
 * linear-before-reset form (it is scaled by r_t) and is pre-added in the
 * original form. The original form needs r_t before W_hn can be applied, so
 * it takes two kernels around a second, H-wide GEMM. */

/* VL units of the linear-before-reset form; gate strides as in lstm_chunk.
 * hin is h_{t-1}, hout receives h_t (they may alias). */
static inline __attribute__((always_inline)) void FN(gru_lbr_chunk)(
    const frnn_cellp *p, const int fast, const int tail, VTAIL m,
    const float *x, size_t xs, const float *hg, size_t hs, const float *b, const float *bhn,
    const float *hin, float *hout, float *o)
{
    const size_t H = (size_t)p->H;
#define LD(ptr) (tail ? vloadt((ptr), m) : vload(ptr))
#define ST(ptr, v) do { if (tail) vstoret((ptr), (v), m); else vstore((ptr), (v)); } while (0)
    V ar = vadd(vadd(LD(x), LD(hg)), LD(b));
    V az = vadd(vadd(LD(x + xs), LD(hg + hs)), LD(b + H));
    V hn = vadd(LD(hg + 2 * hs), LD(bhn));
    V xn = vadd(LD(x + 2 * xs), LD(b + 2 * H));
    V hp = LD(hin);
    V r, z, nn;
    if (fast) {
        r = FN(vsigmoid)(ar);
        z = FN(vsigmoid)(az);
        nn = FN(vtanh_fast)(vfma(r, hn, xn));
    } else {
        const int clip = p->clip > 0.0f;
        if (clip) { ar = FN(clipv)(ar, p->clip); az = FN(clipv)(az, p->clip); }
        r = FN(vact)(&p->act[0], ar);
        z = FN(vact)(&p->act[0], az);
        V an = vfma(r, hn, xn);
        if (clip) an = FN(clipv)(an, p->clip);
        nn = FN(vact)(&p->act[1], an);
    }
    V hv = vfma(z, vsub(hp, nn), nn);
    ST(hout, hv);
    if (o) ST(o, hv);
#undef LD
#undef ST
}

/* The default linear-before-reset GRU on two full chunks at once (two rows,
 * or two unit chunks of one row), the sigmoid chains interleaved as in
 * lstm_fast2. */
static inline __attribute__((always_inline)) void FN(gru_fast2)(
    const float *x0, const float *x1, size_t xs, const float *g0, const float *g1, size_t hs,
    const float *b0, const float *b1, const float *bhn0, const float *bhn1, size_t H,
    const float *hin0, const float *hin1, float *h0, float *h1, float *o0, float *o1)
{
    V a[4], t[2];
    a[0] = vadd(vadd(vload(x0), vload(g0)), vload(b0));
    a[1] = vadd(vadd(vload(x0 + xs), vload(g0 + hs)), vload(b0 + H));
    a[2] = vadd(vadd(vload(x1), vload(g1)), vload(b1));
    a[3] = vadd(vadd(vload(x1 + xs), vload(g1 + hs)), vload(b1 + H));
    FN(vsigmoid_n)(4, a);
    const V hn0 = vadd(vload(g0 + 2 * hs), vload(bhn0)), xn0 = vadd(vload(x0 + 2 * xs), vload(b0 + 2 * H));
    const V hn1 = vadd(vload(g1 + 2 * hs), vload(bhn1)), xn1 = vadd(vload(x1 + 2 * xs), vload(b1 + 2 * H));
    t[0] = vfma(a[0], hn0, xn0);
    t[1] = vfma(a[2], hn1, xn1);
    t[0] = vadd(t[0], t[0]);
    t[1] = vadd(t[1], t[1]);
    FN(vsigmoid_n)(2, t);
    const V n0 = vfma(vset1(2.0f), t[0], vset1(-1.0f)), n1 = vfma(vset1(2.0f), t[1], vset1(-1.0f));
    const V hv0 = vfma(a[1], vsub(vload(hin0), n0), n0);
    const V hv1 = vfma(a[3], vsub(vload(hin1), n1), n1);
    vstore(h0, hv0);
    vstore(h1, hv1);
    if (o0) vstore(o0, hv0);
    if (o1) vstore(o1, hv1);
}

static void FN(gru_lbr_rows)(const frnn_cellp *p, int n, const float *const *xrow,
                             const float *hg, float *h, float *const *orow)
{
    const int H = p->H;
    VTAIL none = vtail(0);
    for (int r = 0; r < n; r++) {
        const float *x = xrow[r], *g = hg + (size_t)r * 3 * H;
        float *hr = h + (size_t)r * H, *o = orow ? orow[r] : NULL;
        for (int k = 0; k < H; k += VL) {
            const int tail = k + VL > H;
            VTAIL m = tail ? vtail(H - k) : none;
            float *ok = o ? o + k : NULL;
            if (p->fast) {
                if (tail) FN(gru_lbr_chunk)(p, 1, 1, m, x + k, H, g + k, H, p->bias + k, p->b_hn + k, hr + k, hr + k, ok);
                else FN(gru_lbr_chunk)(p, 1, 0, m, x + k, H, g + k, H, p->bias + k, p->b_hn + k, hr + k, hr + k, ok);
            } else {
                if (tail) FN(gru_lbr_chunk)(p, 0, 1, m, x + k, H, g + k, H, p->bias + k, p->b_hn + k, hr + k, hr + k, ok);
                else FN(gru_lbr_chunk)(p, 0, 0, m, x + k, H, g + k, H, p->bias + k, p->b_hn + k, hr + k, hr + k, ok);
            }
        }
    }
}

/* Original form on the fused path, first half of a step: VL units' r and z
 * from the input projection x (gates xs apart), the recurrent product hg
 * (gates hs apart) and the pre-added biases; z_t and r_t * h_{t-1} go to z
 * and rh, which W_hn then multiplies (frnn_rstep2). */
static inline __attribute__((always_inline)) void FN(gru_rz2_chunk)(
    const frnn_cellp *p, const int fast, const int tail, VTAIL m,
    const float *x, size_t xs, const float *hg, size_t hs, const float *b,
    const float *hin, float *z, float *rh)
{
    const size_t H = (size_t)p->H;
#define LD(ptr) (tail ? vloadt((ptr), m) : vload(ptr))
#define ST(ptr, v) do { if (tail) vstoret((ptr), (v), m); else vstore((ptr), (v)); } while (0)
    V a[2];
    a[0] = vadd(vadd(LD(x), LD(hg)), LD(b));
    a[1] = vadd(vadd(LD(x + xs), LD(hg + hs)), LD(b + H));
    if (fast) {
        FN(vsigmoid_n)(2, a);
    } else {
        if (p->clip > 0.0f) { a[0] = FN(clipv)(a[0], p->clip); a[1] = FN(clipv)(a[1], p->clip); }
        a[0] = FN(vact)(&p->act[0], a[0]);
        a[1] = FN(vact)(&p->act[0], a[1]);
    }
    ST(z, a[1]);
    ST(rh, vmul(a[0], LD(hin)));
#undef LD
#undef ST
}

/* Original form, second half: VL units of n_t from the input projection's
 * n gate xn, the pre-added bias b_n (b_in + b_hn) and hn = W_hn (r * h),
 * then h_t. */
static inline __attribute__((always_inline)) void FN(gru_n2_chunk)(
    const frnn_cellp *p, const int fast, const int tail, VTAIL m,
    const float *xn, const float *hn, const float *bn, const float *z, const float *hin,
    float *hout, float *o)
{
#define LD(ptr) (tail ? vloadt((ptr), m) : vload(ptr))
#define ST(ptr, v) do { if (tail) vstoret((ptr), (v), m); else vstore((ptr), (v)); } while (0)
    V an = vadd(vadd(LD(xn), LD(hn)), LD(bn));
    V nn;
    if (fast) {
        nn = FN(vtanh_fast)(an);
    } else {
        if (p->clip > 0.0f) an = FN(clipv)(an, p->clip);
        nn = FN(vact)(&p->act[1], an);
    }
    V hv = vfma(LD(z), vsub(LD(hin), nn), nn);
    ST(hout, hv);
    if (o) ST(o, hv);
#undef LD
#undef ST
}

/* Original form, part 1: r and z from the (n, 2H) GEMM result hg (z is
 * written back over hg's z block) and rh = r * h_{t-1}. */
static inline __attribute__((always_inline)) void FN(gru_rz_chunk)(
    const frnn_cellp *p, const int tail, VTAIL m, int k,
    const float *x, float *hg, const float *h, float *rh)
{
    const int H = p->H;
    FN(gru_rz2_chunk)(p, 0, tail, m, x + k, H, hg + k, H, p->bias + k, h + k, hg + H + k, rh + k);
}

static void FN(gru_rz_rows)(const frnn_cellp *p, int n, const float *const *xrow,
                            float *hg, const float *h, float *rh)
{
    const int H = p->H;
    VTAIL none = vtail(0);
    for (int r = 0; r < n; r++) {
        float *g = hg + (size_t)r * 2 * H;
        const float *hr = h + (size_t)r * H;
        float *rr = rh + (size_t)r * H;
        int k = 0;
        for (; k + VL <= H; k += VL) FN(gru_rz_chunk)(p, 0, none, k, xrow[r], g, hr, rr);
        if (k < H) FN(gru_rz_chunk)(p, 1, vtail(H - k), k, xrow[r], g, hr, rr);
    }
}

/* Original form, part 2: hn = W_hn (r * h_{t-1}) from the second GEMM. */
static inline __attribute__((always_inline)) void FN(gru_n_chunk)(
    const frnn_cellp *p, const int tail, VTAIL m, int k,
    const float *x, const float *z_, const float *hn, float *h, float *o)
{
    const int H = p->H;
    FN(gru_n2_chunk)(p, 0, tail, m, x + 2 * H + k, hn + k, p->bias + 2 * H + k, z_ + k, h + k, h + k,
                     o ? o + k : NULL);
}

static void FN(gru_n_rows)(const frnn_cellp *p, int n, const float *const *xrow,
                           const float *hg, const float *hn, float *h, float *const *orow)
{
    const int H = p->H;
    VTAIL none = vtail(0);
    for (int r = 0; r < n; r++) {
        const float *z = hg + (size_t)r * 2 * H + H, *hnr = hn + (size_t)r * H;
        float *hr = h + (size_t)r * H, *o = orow ? orow[r] : NULL;
        int k = 0;
        for (; k + VL <= H; k += VL) FN(gru_n_chunk)(p, 0, none, k, xrow[r], z, hnr, hr, o);
        if (k < H) FN(gru_n_chunk)(p, 1, vtail(H - k), k, xrow[r], z, hnr, hr, o);
    }
}
