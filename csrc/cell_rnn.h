/* Elman RNN fused step kernel (included once per ISA by kern_*.c).
 *   h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
 * f is tanh or relu (PyTorch's nonlinearity) or any ONNX activation; clip
 * clamps the pre-activation. b_ih + b_hh is pre-added at load. */

static inline __attribute__((always_inline)) void FN(rnn_chunk)(
    const frnn_cellp *p, const int tail, VTAIL m,
    const float *x, const float *hg, const float *b, float *h, float *o)
{
#define LD(ptr) (tail ? vloadt((ptr), m) : vload(ptr))
#define ST(ptr, v) do { if (tail) vstoret((ptr), (v), m); else vstore((ptr), (v)); } while (0)
    V a = vadd(vadd(LD(x), LD(hg)), LD(b));
    if (p->clip > 0.0f) a = FN(clipv)(a, p->clip);
    V hv;
    if (p->act[0].kind == FRNN_ACT_TANH) hv = FN(vtanh_fast)(a);
    else if (p->act[0].kind == FRNN_ACT_RELU) hv = vmax_keepnan(a, vset1(0.0f));
    else hv = FN(vact)(&p->act[0], a);
    ST(h, hv);
    if (o) ST(o, hv);
#undef LD
#undef ST
}

static void FN(rnn_rows)(const frnn_cellp *p, int n, const float *const *xrow,
                         const float *hg, float *h, float *const *orow)
{
    const int H = p->H;
    VTAIL none = vtail(0);
    for (int r = 0; r < n; r++) {
        const float *g = hg + (size_t)r * H, *x = xrow[r];
        float *hr = h + (size_t)r * H, *o = orow ? orow[r] : NULL;
        int k = 0;
        for (; k + VL <= H; k += VL) FN(rnn_chunk)(p, 0, none, x + k, g + k, p->bias + k, hr + k, o ? o + k : NULL);
        if (k < H) FN(rnn_chunk)(p, 1, vtail(H - k), x + k, g + k, p->bias + k, hr + k, o ? o + k : NULL);
    }
}
