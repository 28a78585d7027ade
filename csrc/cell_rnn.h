/* Elman RNN fused step kernel (included once per ISA by kern_*.c).
 *   h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
 * f is tanh or relu (PyTorch's nonlinearity) or any ONNX activation; clip
 * clamps the pre-activation. b_ih + b_hh is pre-added at load. */

static inline __attribute__((always_inline)) void FN(rnn_chunk)(
    const frnn_cellp *p, const int tail, VTAIL m, int k,
    const float *x, const float *hg, float *h, float *o)
{
#define LD(ptr) (tail ? vloadt((ptr), m) : vload(ptr))
#define ST(ptr, v) do { if (tail) vstoret((ptr), (v), m); else vstore((ptr), (v)); } while (0)
    V a = vadd(vadd(LD(x + k), LD(hg + k)), LD(p->bias + k));
    if (p->clip > 0.0f) a = FN(clipv)(a, p->clip);
    V hv;
    if (p->act[0].kind == FRNN_ACT_TANH) hv = FN(vtanh)(a);
    else if (p->act[0].kind == FRNN_ACT_RELU) hv = vmax_keepnan(a, vset1(0.0f));
    else hv = FN(vact)(&p->act[0], a);
    ST(h + k, hv);
    if (o) ST(o + k, hv);
#undef LD
#undef ST
}

static void FN(rnn_rows)(const frnn_cellp *p, int n, const float *const *xrow,
                         const float *hg, float *h, float *const *orow)
{
    const int H = p->H;
    VTAIL none = vtail(0);
    for (int r = 0; r < n; r++) {
        const float *g = hg + (size_t)r * H;
        float *hr = h + (size_t)r * H, *o = orow ? orow[r] : NULL;
        int k = 0;
        for (; k + VL <= H; k += VL) FN(rnn_chunk)(p, 0, none, k, xrow[r], g, hr, o);
        if (k < H) FN(rnn_chunk)(p, 1, vtail(H - k), k, xrow[r], g, hr, o);
    }
}
