/* LSTM fused step kernel (included once per ISA by kern_*.c).
 *
 * PyTorch gate order (i, f, g, o); ONNX's peephole, coupled-gate and clip
 * extensions:
 *   i_t = f(W_ii x_t + W_hi h_{t-1} + b_i [+ p_i * c_{t-1}])
 *   f_t = f(W_if x_t + W_hf h_{t-1} + b_f [+ p_f * c_{t-1}])   input_forget: f_t = 1 - i_t
 *   g_t = g(W_ig x_t + W_hg h_{t-1} + b_g)
 *   c_t = f_t * c_{t-1} + i_t * g_t
 *   o_t = f(W_io x_t + W_ho h_{t-1} + b_o [+ p_o * c_t])
 *   h_t = o_t * h(c_t)            with projection: h_t = W_hr (o_t * h(c_t))
 * f, g, h are sigmoid, tanh, tanh by default; with clip every pre-activation
 * is clamped to [-clip, clip]. b = b_ih + b_hh, pre-added at load.
 * W x_t comes from the hoisted input projection (xrow), W h_{t-1} from the
 * step's one GEMM (hg); this kernel does everything else in one pass over
 * VL hidden units at a time, all four gates in registers. */

static inline __attribute__((always_inline)) V FN(clipv)(V x, float c) {
    return vmin_keepnan(vmax_keepnan(x, vset1(-c)), vset1(c));
}

/* VL hidden units starting at the given pointers. Gate g of the input
 * projection is at x[g * xs], of the recurrent product at hg[g * hs]; bias
 * and peephole gates are H apart. */
static inline __attribute__((always_inline)) void FN(lstm_chunk)(
    const frnn_cellp *p, const int fast, const int tail, VTAIL m,
    const float *x, size_t xs, const float *hg, size_t hs, const float *b, const float *pp,
    float *c, float *h, float *o)
{
    const size_t H = (size_t)p->H;
#define LD(ptr) (tail ? vloadt((ptr), m) : vload(ptr))
#define ST(ptr, v) do { if (tail) vstoret((ptr), (v), m); else vstore((ptr), (v)); } while (0)
    V ai = vadd(vadd(LD(x), LD(hg)), LD(b));
    V af = vadd(vadd(LD(x + xs), LD(hg + hs)), LD(b + H));
    V ag = vadd(vadd(LD(x + 2 * xs), LD(hg + 2 * hs)), LD(b + 2 * H));
    V ao = vadd(vadd(LD(x + 3 * xs), LD(hg + 3 * hs)), LD(b + 3 * H));
    V cp = LD(c);
    V ig, fg, gg, og, cn, hv;
    if (fast) {
        ig = FN(vsigmoid)(ai);
        fg = FN(vsigmoid)(af);
        gg = FN(vtanh_fast)(ag);
        cn = vfma(fg, cp, vmul(ig, gg));
        og = FN(vsigmoid)(ao);
        hv = vmul(og, FN(vtanh_fast)(cn));
    } else {
        const int clip = p->clip > 0.0f;
        if (pp) ai = vfma(LD(pp), cp, ai);
        if (clip) ai = FN(clipv)(ai, p->clip);
        ig = FN(vact)(&p->act[0], ai);
        if (p->input_forget) {
            fg = vsub(vset1(1.0f), ig);
        } else {
            if (pp) af = vfma(LD(pp + H), cp, af);
            if (clip) af = FN(clipv)(af, p->clip);
            fg = FN(vact)(&p->act[0], af);
        }
        if (clip) ag = FN(clipv)(ag, p->clip);
        gg = FN(vact)(&p->act[1], ag);
        cn = vfma(fg, cp, vmul(ig, gg));
        if (pp) ao = vfma(LD(pp + 2 * H), cn, ao);
        if (clip) ao = FN(clipv)(ao, p->clip);
        og = FN(vact)(&p->act[0], ao);
        hv = vmul(og, FN(vact)(&p->act[2], cn));
    }
    ST(c, cn);
    ST(h, hv);
    if (o) ST(o, hv);
#undef LD
#undef ST
}

/* The default LSTM (sigmoid/tanh, no extensions) on two full chunks at once
 * (two rows, or two unit chunks of one row): the eight gate activations (tanh(a) = 2 sigmoid(2a) - 1),
 * then both tanh(c_t), go through the sigmoid interleaved, which keeps the
 * vector units busy where a single chunk's dependent chain would not. */
static inline __attribute__((always_inline)) void FN(lstm_fast2)(
    const float *x0, const float *x1, size_t xs, const float *g0, const float *g1, size_t hs,
    const float *b0, const float *b1, size_t H, float *c0, float *c1, float *h0, float *h1, float *o0, float *o1)
{
    V a[8], t[2], cn[2];
#pragma GCC unroll 4
    for (int q = 0; q < 4; q++) {
        a[q] = vadd(vadd(vload(x0 + q * xs), vload(g0 + q * hs)), vload(b0 + q * H));
        a[4 + q] = vadd(vadd(vload(x1 + q * xs), vload(g1 + q * hs)), vload(b1 + q * H));
    }
    a[2] = vadd(a[2], a[2]);
    a[6] = vadd(a[6], a[6]);
    FN(vsigmoid_n)(8, a);
    cn[0] = vfma(a[1], vload(c0), vmul(a[0], vfma(vset1(2.0f), a[2], vset1(-1.0f))));
    cn[1] = vfma(a[5], vload(c1), vmul(a[4], vfma(vset1(2.0f), a[6], vset1(-1.0f))));
    vstore(c0, cn[0]);
    vstore(c1, cn[1]);
    t[0] = vadd(cn[0], cn[0]);
    t[1] = vadd(cn[1], cn[1]);
    FN(vsigmoid_n)(2, t);
    V hv0 = vmul(a[3], vfma(vset1(2.0f), t[0], vset1(-1.0f)));
    V hv1 = vmul(a[7], vfma(vset1(2.0f), t[1], vset1(-1.0f)));
    vstore(h0, hv0);
    vstore(h1, hv1);
    if (o0) vstore(o0, hv0);
    if (o1) vstore(o1, hv1);
}

static inline __attribute__((always_inline)) void FN(lstm_row)(
    const frnn_cellp *p, const int fast, const float *x, const float *hg,
    float *c, float *h, float *o)
{
    const int H = p->H;
    const float *pp = p->peep;
    int k = 0;
    VTAIL none = vtail(0);
    for (; k + VL <= H; k += VL)
        FN(lstm_chunk)(p, fast, 0, none, x + k, H, hg + k, H, p->bias + k, pp ? pp + k : NULL,
                       c + k, h + k, o ? o + k : NULL);
    if (k < H)
        FN(lstm_chunk)(p, fast, 1, vtail(H - k), x + k, H, hg + k, H, p->bias + k, pp ? pp + k : NULL,
                       c + k, h + k, o ? o + k : NULL);
}

static void FN(lstm_rows)(const frnn_cellp *p, int n, const float *const *xrow,
                          const float *hg, float *c, float *h, float *const *orow)
{
    const size_t H = (size_t)p->H;
    for (int r = 0; r < n; r++) {
        float *o = orow ? orow[r] : NULL;
        if (p->fast)
            FN(lstm_row)(p, 1, xrow[r], hg + r * 4 * H, c + r * H, h + r * H, o);
        else
            FN(lstm_row)(p, 0, xrow[r], hg + r * 4 * H, c + r * H, h + r * H, o);
    }
}
