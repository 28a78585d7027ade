
/* The recurrent product fused with the gate kernel (included per ISA).
 *
 * W_hh is packed at load into blocks of UB hidden units with all gates of
 * those units side by side: wp[blk][k][g][UB]. One call handles a range of
 * blocks for all active rows: a register-blocked micro-kernel accumulates
 * h_{t-1} W^T for R rows x (gates of VL units), and the cell's fused chunk
 * consumes the accumulators straight from an L1 tile. A thread that owns a
 * range of blocks keeps its slice of W_hh in its own cache across steps and
 * only exchanges h (DeepCPU / oneDNN brgemm RNN). */

#if FRNN_LEVEL == 2
#define RMAX 6
#elif FRNN_LEVEL == 1
#define RMAX 3
#else
#define RMAX 4
#endif

/* acc[r][a] (+)= sum_k h[r][k] * panel_a[k], panel_a[k] = pa[a] + k * ps;
 * stored at out[r * old + a * oas] (accumulating onto it when accum). The
 * first npf iterations each ask for one line of pf into L2: lines that come
 * from L3 arrive while the FMAs run. (Asked for in a burst, they hold the
 * line-fill buffers until L3 answers, the loads behind them wait, and the
 * transfer costs as much as when nothing is prefetched: measured, a KC
 * slice of W streamed from L3 added ~3000 cycles either way.) */
static inline __attribute__((always_inline)) void FN(mk)(
    const int R, const int NA, const float *const *pa, size_t ps,
    const float *h, size_t ldh, int K, float *out, size_t old, size_t oas, int accum,
    const char *pf, int npf, const int dual)
{
    V acc[RMAX][4];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int a = 0; a < NA; a++)
            acc[r][a] = accum ? vload(out + (size_t)r * old + (size_t)a * oas) : vset1(0.0f);
    int k = 0;
    if (R * NA <= 2 || (dual && R == 1)) {
        /* One or two accumulators: a chain of dependent FMAs each, which
         * would leave the loads waiting on FMA latency. A second set for
         * odd k, summed at the end (batch 1 of the original-form GRU's r, z
         * product, and of a lone unit block in the single-gate product).
         * dual: also one row of up to four (the recurrent product at batch
         * 1: a GRU's three chains left its step 5 % slower; not asked for
         * by the input projection, whose rows must not depend on how many
         * a call takes, as projection chunks change that). */
        V acc2[RMAX][4];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int a = 0; a < NA; a++) acc2[r][a] = vset1(0.0f);
        for (; k + 1 < K; k += 2) {
            V w[4], w2[4];
            if (k < npf) __builtin_prefetch(pf + (size_t)k * 64, 0, 2);
            if (k + 1 < npf) __builtin_prefetch(pf + (size_t)(k + 1) * 64, 0, 2);
#pragma GCC unroll 4
            for (int a = 0; a < NA; a++) {
                w[a] = vload(pa[a] + (size_t)k * ps);
                w2[a] = vload(pa[a] + (size_t)(k + 1) * ps);
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                V hb = vset1(h[(size_t)r * ldh + k]), hb2 = vset1(h[(size_t)r * ldh + k + 1]);
#pragma GCC unroll 4
                for (int a = 0; a < NA; a++) {
                    acc[r][a] = vfma(w[a], hb, acc[r][a]);
                    acc2[r][a] = vfma(w2[a], hb2, acc2[r][a]);
                }
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++)
#pragma GCC unroll 4
            for (int a = 0; a < NA; a++) acc[r][a] = vadd(acc[r][a], acc2[r][a]);
    }
    for (; k < K; k++) {
        V w[4];
        if (k < npf) __builtin_prefetch(pf + (size_t)k * 64, 0, 2);
#pragma GCC unroll 4
        for (int a = 0; a < NA; a++) w[a] = vload(pa[a] + (size_t)k * ps);
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            V hb = vset1(h[(size_t)r * ldh + k]);
#if FRNN_LEVEL > 0
            /* One broadcast per row, reused by the NA FMAs: folding it into
             * each FMA as a memory operand would make the loop load-bound. */
            __asm__("" : "+v"(hb));
#endif
#pragma GCC unroll 4
            for (int a = 0; a < NA; a++) acc[r][a] = vfma(w[a], hb, acc[r][a]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int a = 0; a < NA; a++) vstore(out + (size_t)r * old + (size_t)a * oas, acc[r][a]);
}

#define MK_CASE_R(NA_)                                                                                       \
    switch (R) {                                                                                             \
    case 1: FN(mk)(1, NA_, pa, ps, h, ldh, K, out, old, oas, accum, pf, npf, dual); break;                   \
    case 2: FN(mk)(2, NA_, pa, ps, h, ldh, K, out, old, oas, accum, pf, npf, dual); break;                   \
    case 3: FN(mk)(3 < RMAX ? 3 : RMAX, NA_, pa, ps, h, ldh, K, out, old, oas, accum, pf, npf, dual); break; \
    case 4: FN(mk)(4 < RMAX ? 4 : RMAX, NA_, pa, ps, h, ldh, K, out, old, oas, accum, pf, npf, dual); break; \
    case 5: FN(mk)(5 < RMAX ? 5 : RMAX, NA_, pa, ps, h, ldh, K, out, old, oas, accum, pf, npf, dual); break; \
    default: FN(mk)(RMAX, NA_, pa, ps, h, ldh, K, out, old, oas, accum, pf, npf, dual); break;               \
    }

/* Kept out of line: inlined into the step, whose epilogue competes for
 * registers, the 6-row blocks spill accumulators. */
static __attribute__((noinline)) void FN(mk_any)(int R, int NA, const float *const *pa, size_t ps,
                       const float *h, size_t ldh, int K, float *out, size_t old, size_t oas, int accum,
                       const char *pf, int npf, int dual)
{
    switch (NA) {
    case 1: MK_CASE_R(1) break;
    case 2: MK_CASE_R(2) break;
    case 3: MK_CASE_R(3) break;
    default: MK_CASE_R(4) break;
    }
}

/* Offset of hidden unit u in a row's xg: unit blocks xbs apart, each
 * [g][UB] like the packed weights. */
static inline size_t FN(xoff)(const frnn_rstep *s, int u)
{
    return (size_t)(u / UB) * s->xbs + (size_t)(u % UB);
}

/* The default LSTM / GRU (linear-before-reset) gate math of two full
 * chunks at once: row ra at unit ua and row rb at unit ub (two rows, or two
 * unit chunks of one row), their recurrent pre-activations at ta and tb,
 * gate g at + g * tgs. */
static inline __attribute__((always_inline)) void FN(fast_pair)(const frnn_rstep *s, const frnn_cellp *p,
                                                                int ra, int ua, int rb, int ub,
                                                                const float *ta, const float *tb, size_t tgs)
{
    const size_t H = (size_t)p->H, ia = (size_t)ra * H + ua, ib = (size_t)rb * H + ub;
    const float *x0 = s->xrow[ra] + FN(xoff)(s, ua), *x1 = s->xrow[rb] + FN(xoff)(s, ub);
    float *o0 = s->orow && s->orow[ra] ? s->orow[ra] + ua : NULL;
    float *o1 = s->orow && s->orow[rb] ? s->orow[rb] + ub : NULL;
    if (s->cell == FRNN_LSTM)
        FN(lstm_fast2)(x0, x1, UB, ta, tb, tgs, p->bias + ua, p->bias + ub, H, s->c + ia, s->c + ib,
                       s->hout + ia, s->hout + ib, o0, o1);
    else
        FN(gru_fast2)(x0, x1, UB, ta, tb, tgs, p->bias + ua, p->bias + ub, p->b_hn + ua, p->b_hn + ub, H,
                      s->hin + ia, s->hin + ib, s->hout + ia, s->hout + ib, o0, o1);
}

/* Epilogue for R rows of one VL-wide sub-block at unit u; the tile holds the
 * recurrent pre-activations, row r, accumulator a at tile[(r*4 + a) * VL]. */
static inline void FN(epilogue)(const frnn_rstep *s, const frnn_cellp *p, int r0, int R, int u,
                                int na, const float *tile, size_t tld, size_t tgs)
{
    const int H = p->H;
    for (int j = 0; j < na; j++) {           /* RNN: one accumulator per sub-block */
        const int uj = s->cell == FRNN_RNN ? u + j * UB : u;
        if (uj >= H) break;
        const int tail = uj + VL > H;
        VTAIL m = vtail(tail ? H - uj : 0);
        int r = 0;
        if (s->cell != FRNN_RNN && p->fast && !tail && !s->rh) {
            /* the default gate math two rows at a time (see lstm_fast2) */
            for (; r + 1 < R; r += 2)
                FN(fast_pair)(s, p, r0 + r, uj, r0 + r + 1, uj, tile + (size_t)r * tld,
                              tile + (size_t)(r + 1) * tld, tgs);
        }
        for (; r < R; r++) {
            const int row = r0 + r;
            const float *x = s->xrow[row] + FN(xoff)(s, uj);
            const float *tg = tile + (size_t)r * tld;
            float *o = s->orow && s->orow[row] ? s->orow[row] + uj : NULL;
            float *hout = s->hout + (size_t)row * H + uj;
            if (s->cell == FRNN_LSTM) {
                const float *pp = p->peep ? p->peep + uj : NULL;
                float *c = s->c + (size_t)row * H + uj;
                if (p->fast) {
                    if (tail) FN(lstm_chunk)(p, 1, 1, m, x, UB, tg, tgs, p->bias + uj, pp, c, hout, o);
                    else FN(lstm_chunk)(p, 1, 0, m, x, UB, tg, tgs, p->bias + uj, pp, c, hout, o);
                } else {
                    if (tail) FN(lstm_chunk)(p, 0, 1, m, x, UB, tg, tgs, p->bias + uj, pp, c, hout, o);
                    else FN(lstm_chunk)(p, 0, 0, m, x, UB, tg, tgs, p->bias + uj, pp, c, hout, o);
                }
            } else if (s->cell == FRNN_GRU && s->rh) {
                /* original form, first half: z_t and r_t * h_{t-1} */
                const float *hin = s->hin + (size_t)row * H + uj;
                float *z = s->zb + (size_t)row * H + uj, *rh = s->rh + (size_t)row * H + uj;
                if (p->fast) {
                    if (tail) FN(gru_rz2_chunk)(p, 1, 1, m, x, UB, tg, tgs, p->bias + uj, hin, z, rh);
                    else FN(gru_rz2_chunk)(p, 1, 0, m, x, UB, tg, tgs, p->bias + uj, hin, z, rh);
                } else {
                    if (tail) FN(gru_rz2_chunk)(p, 0, 1, m, x, UB, tg, tgs, p->bias + uj, hin, z, rh);
                    else FN(gru_rz2_chunk)(p, 0, 0, m, x, UB, tg, tgs, p->bias + uj, hin, z, rh);
                }
            } else if (s->cell == FRNN_GRU) {
                const float *hin = s->hin + (size_t)row * H + uj;
                if (p->fast) {
                    if (tail) FN(gru_lbr_chunk)(p, 1, 1, m, x, UB, tg, tgs, p->bias + uj, p->b_hn + uj, hin, hout, o);
                    else FN(gru_lbr_chunk)(p, 1, 0, m, x, UB, tg, tgs, p->bias + uj, p->b_hn + uj, hin, hout, o);
                } else {
                    if (tail) FN(gru_lbr_chunk)(p, 0, 1, m, x, UB, tg, tgs, p->bias + uj, p->b_hn + uj, hin, hout, o);
                    else FN(gru_lbr_chunk)(p, 0, 0, m, x, UB, tg, tgs, p->bias + uj, p->b_hn + uj, hin, hout, o);
                }
            } else {
                if (tail) FN(rnn_chunk)(p, 1, m, x, tg + (size_t)j * tgs, p->bias + uj, hout, o);
                else FN(rnn_chunk)(p, 0, m, x, tg + (size_t)j * tgs, p->bias + uj, hout, o);
            }
        }
    }
}

/* Cache blocking of the micro-kernel loops: a KC-deep slice of a weight
 * panel (KC x 64 floats, 512 KB at most) stays in L2 while every row block
 * of an MC-row chunk streams past it. Not L1: the micro-kernel needs a 64-
 * byte panel line per 6 FMAs, well within L2's bandwidth, while each K
 * slice costs a load and store of every accumulator and a call. Measured
 * (AMD EPYC, 48 KB L1, 1 MB L2), KC 2048 against 128: B=64 LSTM H=512 1.4-
 * 3.8 %, H=1024 3.8-5 % faster, B=1 H=1024 3.5-11 %, K=2048 0.3-2 %. */
#define KC 2048
#define MC 96

static inline void FN(panels)(const float *wp, int cell, int G, int K, int b, int na, int sv, const float **pa)
{
    const size_t bs = (size_t)K * G * UB;
    for (int a = 0; a < na; a++)
        pa[a] = cell == FRNN_RNN ? wp + (size_t)(b + a) * bs + sv : wp + (size_t)b * bs + (size_t)a * UB + sv;
}

/* The lines the epilogue of rows [r0, r0 + n) of nb unit blocks will
 * touch: their xg lines, and the h_t and output lines it will write. */
typedef struct {
    const frnn_rstep *s;
    int r0, n, nb;
    size_t xo, ho, hl;   /* offsets within a row, and h_t's byte length */
} FN(epf);

static inline void FN(epf_rows)(const FN(epf) *e, int r0, int r1)
{
    const frnn_rstep *s = e->s;
    for (int r = r0; r < r1; r++) {
        const char *ph = (const char *)(s->hout + (size_t)r * s->cp->H + e->ho);
        const char *po = s->orow && s->orow[r] ? (const char *)(s->orow[r] + e->ho) : NULL;
        for (int b = 0; b < e->nb; b++) {
            const char *px = (const char *)(s->xrow[r] + e->xo + (size_t)b * s->xbs);
            for (size_t q = 0; q < (size_t)s->G * UB * sizeof(float); q += 64) __builtin_prefetch(px + q, 0, 3);
        }
        for (size_t q = 0; q < e->hl; q += 64) {
            /* (the original-form GRU's first half writes z and r * h, not h) */
            if (!s->rh) __builtin_prefetch(ph + q, 1, 3);
            if (po) __builtin_prefetch(po + q, 1, 3);
        }
    }
}

/* Rows of nseg segments times the panels, blocked over K: segment s's row
 * r, panel a into seg[s].out + oo + r * old + a * oas, at most RB rows per
 * micro-kernel call. Every segment's rows pass a KC-deep slice of the
 * panels while it is in L1. */
static inline __attribute__((always_inline)) void FN(blocked)(
    const frnn_rows *seg, int nseg, int na, const float *const *pa, size_t ps, size_t ldh, int K,
    size_t oo, size_t old, size_t oas, const int RB, const char *pf, size_t pf_bytes, const FN(epf) *ep,
    int accum, int dual)
{
    /* pf: the next panel, pulled into L2 a share per micro-kernel call
     * (inside the call, a line per iteration: see mk), so a slice of W that
     * does not stay in L2 between steps streams in while this panel is
     * computed instead of when it is needed. ep: the
     * epilogue's rows, likewise a few per call (their xg rows come from
     * memory: asked for all at once, measured B=64 H=256, they filled the
     * line-fill buffers and stalled the product for 15 % of the step).
     * Rows are split evenly over the fewest blocks of at most RB (32 rows:
     * 2 x 6 + 4 x 5, not 5 x 6 + 2): a short block keeps too few
     * accumulators busy per loaded panel row. */
    size_t nrb_all = 0;
    for (int q = 0; q < nseg; q++) nrb_all += (size_t)((seg[q].n + RB - 1) / RB);
    const size_t calls = (size_t)((K + KC - 1) / KC) * nrb_all;
    const size_t pf_step = pf && calls ? ((pf_bytes + calls - 1) / calls + 63) & ~(size_t)63 : 0;
    const int ep_step = ep && calls ? (int)((ep->n + calls - 1) / calls) : 0;
    int ep_next = ep ? ep->r0 : 0;
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int kc = K - k0 < KC ? K - k0 : KC;
        const float *pk[4];
        for (int a = 0; a < na; a++) pk[a] = pa[a] + (size_t)k0 * ps;
        for (int q = 0; q < nseg; q++) {
            const int n = seg[q].n;
            const int nrb = (n + RB - 1) / RB, rq = nrb ? n / nrb : 0, rx = nrb ? n % nrb : 0;
            for (int rb = 0, r0 = 0; rb < nrb; rb++) {
                const int R = rq + (rb < rx);
                const char *pfc = pf;
                int npf = 0;
                if (pf_step) {
                    const size_t e = pf_bytes < pf_step ? pf_bytes : pf_step;
                    npf = (int)((e + 63) / 64);
                    if (npf > kc) {   /* more lines than iterations: the rest now */
                        for (size_t o = (size_t)kc * 64; o < e; o += 64) __builtin_prefetch(pf + o, 0, 2);
                        npf = kc;
                    }
                    pf += e;
                    pf_bytes -= e;
                }
                if (ep_step && ep_next < ep->r0 + ep->n) {
                    const int e1 = ep_next + ep_step < ep->r0 + ep->n ? ep_next + ep_step : ep->r0 + ep->n;
                    FN(epf_rows)(ep, ep_next, e1);
                    ep_next = e1;
                }
                FN(mk_any)(R, na, pk, ps, seg[q].a + (size_t)r0 * ldh + k0, ldh, kc,
                           seg[q].out + oo + (size_t)r0 * old, old, oas, accum || k0 > 0, pfc, npf, dual);
                r0 += R;
            }
        }
    }
}

/* Batch 1, the default LSTM / GRU gate math: the VL-unit chunks of blocks
 * [b0, b1) two at a time, both products first, then the gate math of the
 * pair interleaved (lstm_fast2 / gru_fast2). One chunk's activations are a
 * dependent chain that leaves the vector units idle; with one row that
 * chain is the step's whole epilogue (17 % of a B=1 H=128 LSTM step). A
 * lone or partial last chunk goes through the plain epilogue. */
static void FN(rstep1)(const frnn_rstep *s, int b0, int b1)
{
    const frnn_cellp *p = s->cp;
    const int G = s->G, K = s->K, H = p->H;
    const size_t ps = (size_t)G * UB;
    float tile[2 * 4 * VL] __attribute__((aligned(64)));
    if (s->hzero) memset(tile, 0, sizeof tile);
    const int u1 = b1 * UB < H ? b1 * UB : H;
    for (int u = b0 * UB; u < u1;) {
        const int pair = u + 2 * VL <= u1;
        for (int q = 0; q <= pair && !s->hzero; q++) {
            const int uq = u + q * VL, b = uq / UB, sv = uq % UB;
            const float *pa[4];
            FN(panels)(s->wp, s->cell, G, K, b, G, sv, pa);
            const FN(epf) ep = {s, 0, 1, 1, (size_t)b * s->xbs, (size_t)b * UB, UB * sizeof(float)};
            const frnn_rows rows = {s->hin, tile + q * 4 * VL, 1};
            FN(blocked)(&rows, 1, G, pa, ps, (size_t)K, K, 0, 4 * VL, VL, RMAX, NULL, 0, sv == 0 ? &ep : NULL, 0, 1);
        }
        if (!pair) {
            FN(epilogue)(s, p, 0, 1, u, 1, tile, 4 * VL, VL);
            u += VL;
            continue;
        }
        FN(fast_pair)(s, p, 0, u, 0, u + VL, tile, tile + 4 * VL, VL);
        u += 2 * VL;
    }
}

/* One step for blocks [b0, b1) and rows [0, n); pfb: the first block of
 * the caller's next call, or -1. */
static void FN(rstep)(const frnn_rstep *s, int b0, int b1, int n, int pfb)
{
    const frnn_cellp *p = s->cp;
    if (n == 1 && p->fast && !s->xin && !s->rh && s->cell != FRNN_RNN) {
        FN(rstep1)(s, b0, b1);
        return;
    }
    const int G = s->G, K = s->K;
    const size_t ps = (size_t)G * UB;              /* floats between k rows of a block */
    float tile[MC * 4 * VL] __attribute__((aligned(64)));
    /* RNN has one gate: group up to 4 blocks so the micro-kernel keeps 4
     * independent accumulator chains per row. */
    const int step = s->cell == FRNN_RNN ? 4 : 1;
    /* From a zero state the first step's product is zero: the gate math
     * alone, on a zero tile (saves a step's worth of W_hh traffic, 1/T of
     * the loop); a step that projects its own input writes the tile with
     * that product instead. */
    if (s->hzero && !s->xin) memset(tile, 0, (size_t)(n < MC ? n : MC) * 4 * VL * sizeof(float));
    for (int b = b0; b < b1; b += step) {
        const int nb = b + step <= b1 ? step : b1 - b;
        const int na = s->cell == FRNN_RNN ? nb : G;
        for (int sv = 0; sv < UB; sv += VL) {
            const int u = b * UB + sv;
            if (u >= p->H) break;
            const float *pa[4];
            FN(panels)(s->wp, s->cell, G, K, b, na, sv, pa);
            for (int m0 = 0; m0 < n; m0 += MC) {
                const int mr = n - m0 < MC ? n - m0 : MC;
                /* The lines the epilogue will touch, asked for while the
                 * product runs: output rows (and below 16 rows, xg rows) are
                 * a page apart (no hardware prefetcher follows them), and
                 * the h_t lines were read by the other cores a step ago
                 * (take ownership before the store, not at it). */
                FN(epf) ep = {s, m0, mr, nb, (size_t)b * s->xbs, (size_t)b * UB, (size_t)nb * UB * sizeof(float)};
                const int nblk = (p->H + UB - 1) / UB;
                /* W_hh's next panel, into L2 while this one is used (from
                 * L3 when a thread's slice exceeds L2; measured B=64, 1
                 * thread: H=1024 13 %, H=512 7 % faster than leaving it to
                 * the hardware prefetchers) */
                const int nxt = b + step < b1 ? b + step : pfb;
                const int nnb = nxt >= 0 && nblk - nxt < step ? nblk - nxt : step;
                /* (a step that projects its own input: the next panel of W_ih) */
                const int kn = s->xin ? s->kx : K;
                const float *wn = s->xin ? s->wpx : s->wp;
                const size_t pbytes = (size_t)nnb * kn * G * UB * sizeof(float);
                /* with few rows the panel is gone in a few hundred cycles: the
                 * prefetches would only compete with its loads */
                const int pfon = n >= 16 && nxt >= 0 && nxt < nblk && sv == 0 && m0 == 0;
                const frnn_rows rows = {s->hin + (size_t)m0 * K, tile, mr};
                if (s->xin) {
                    /* x_t W_ih^T first, then h_{t-1} W_hh^T onto it: the
                     * input's rows and products never leave the caches
                     * (no xg written for all steps and read back) */
                    const float *px[4];
                    FN(panels)(s->wpx, s->cell, G, s->kx, b, na, sv, px);
                    const frnn_rows xr = {s->xin + (size_t)m0 * s->ldx, tile, mr};
                    /* meanwhile, this block's panel of W_hh into L2 */
                    const int pfh = n >= 16 && sv == 0 && m0 == 0 && !s->hzero;
                    FN(blocked)(&xr, 1, na, px, ps, s->ldx, s->kx, 0, 4 * VL, VL, RMAX,
                                pfh ? (const char *)(s->wp + (size_t)b * K * G * UB) : NULL,
                                (size_t)nb * K * G * UB * sizeof(float), sv == 0 && s->hzero ? &ep : NULL, 0, 0);
                }
                if (!s->hzero)
                    FN(blocked)(&rows, 1, na, pa, ps, (size_t)K, K, 0, 4 * VL, VL, RMAX,
                                pfon ? (const char *)(wn + (size_t)nxt * kn * G * UB) : NULL, pbytes,
                                sv == 0 ? &ep : NULL, s->xin != NULL, 1);
                FN(epilogue)(s, p, m0, mr, u, s->cell == FRNN_RNN ? na : 1, tile, 4 * VL, VL);
            }
        }
    }
}

/* Epilogue of the second half of a step (frnn_rstep2) for rows [r0, r0 +
 * R) of the na unit blocks from unit u on, accumulator a of row r at
 * tile[(r * 4 + a) * VL]. */
static inline void FN(epilogue2)(const frnn_rstep2 *s, int r0, int R, int u, int na, const float *tile)
{
    const frnn_cellp *p = s->cp;
    const size_t N = (size_t)s->N, H = (size_t)p->H;
    for (int j = 0; j < na; j++) {
        const int uj = u + j * UB;
        if (uj >= s->N) break;
        const int tail = uj + VL > s->N;
        VTAIL m = vtail(tail ? s->N - uj : 0);
        for (int r = 0; r < R; r++) {
            const size_t row = (size_t)(r0 + r);
            const float *t = tile + ((size_t)r * 4 + j) * VL;
            float *o = s->orow && s->orow[row] ? s->orow[row] + uj : NULL;
            float *hout = s->hout + row * N + uj;
            if (s->cell == FRNN_LSTM) {
                const V v = tail ? vloadt(t, m) : vload(t);
                if (tail) { vstoret(hout, v, m); if (o) vstoret(o, v, m); }
                else { vstore(hout, v); if (o) vstore(o, v); }
                continue;
            }
            const float *xn = s->xrow[row] + (size_t)(uj / UB) * s->xbs + (size_t)(uj % UB) + 2 * UB;
            const float *z = s->z + row * H + uj, *hin = s->hin + row * H + uj;
            if (p->fast) {
                if (tail) FN(gru_n2_chunk)(p, 1, 1, m, xn, t, p->bias + 2 * H + uj, z, hin, hout, o);
                else FN(gru_n2_chunk)(p, 1, 0, m, xn, t, p->bias + 2 * H + uj, z, hin, hout, o);
            } else {
                if (tail) FN(gru_n2_chunk)(p, 0, 1, m, xn, t, p->bias + 2 * H + uj, z, hin, hout, o);
                else FN(gru_n2_chunk)(p, 0, 0, m, xn, t, p->bias + 2 * H + uj, z, hin, hout, o);
            }
        }
    }
}

/* The second half of a step for output blocks [b0, b1) and rows [0, n):
 * one gate, so up to 4 blocks share a pass over the rows (4 independent
 * accumulator chains per row, as the RNN's step). pfb as in rstep. */
static void FN(rstep2)(const frnn_rstep2 *s, int b0, int b1, int n, int pfb)
{
    const int K = s->K, nblk = (s->N + UB - 1) / UB;
    float tile[MC * 4 * VL] __attribute__((aligned(64)));
    for (int b = b0; b < b1; b += 4) {
        const int nb = b + 4 <= b1 ? 4 : b1 - b;
        for (int sv = 0; sv < UB; sv += VL) {
            const int u = b * UB + sv;
            if (u >= s->N) break;
            const float *pa[4];
            FN(panels)(s->wp, FRNN_RNN, 1, K, b, nb, sv, pa);
            const int nxt = b + 4 < b1 ? b + 4 : pfb;
            const int nnb = nxt >= 0 && nblk - nxt < 4 ? nblk - nxt : 4;
            for (int m0 = 0; m0 < n; m0 += MC) {
                const int mr = n - m0 < MC ? n - m0 : MC;
                const int pfon = n >= 16 && nxt >= 0 && nxt < nblk && sv == 0 && m0 == 0;
                const frnn_rows rows = {s->a + (size_t)m0 * K, tile, mr};
                FN(blocked)(&rows, 1, nb, pa, UB, (size_t)K, K, 0, 4 * VL, VL, RMAX,
                            pfon ? (const char *)(s->wp + (size_t)nxt * K * UB) : NULL,
                            (size_t)nnb * K * UB * sizeof(float), NULL, 0, 1);
                FN(epilogue2)(s, m0, mr, u, nb, tile);
            }
        }
    }
}

/* Input projection of the rows of nseg segments of X into xg: the same
 * micro-kernel over the packed W_ih, writing full vectors (unit blocks are
 * padded) of unit blocks [b0, b1), each laid out [g][UB], block b at
 * seg.out + r * ldo + b * bso. xpf: xpf_bytes of the caller's next rows of
 * X, prefetched while the last block runs (or NULL). */
static void FN(proj)(const float *wp, int G, int cell, int b0, int b1, int K, const frnn_rows *seg,
                     int nseg, size_t ldx, size_t ldo, size_t bso, const char *xpf, size_t xpf_bytes)
{
    const size_t ps = (size_t)G * UB;
    const int step = cell == FRNN_RNN ? 4 : 1;
    int n = 0;
    for (int q = 0; q < nseg; q++) n += seg[q].n;
    for (int b = b0; b < b1; b += step) {
        const int nb = b + step <= b1 ? step : b1 - b;
        const int na = cell == FRNN_RNN ? nb : G;
        for (int sv = 0; sv < UB; sv += VL) {
            const float *pa[4];
            FN(panels)(wp, cell, G, K, b, na, sv, pa);
            const int nxt = b + step, nnb = b1 - nxt < step ? b1 - nxt : step;
            /* the next panel of W_ih; during the last, the next rows of X */
            const char *pf = NULL;
            size_t pfb = 0;
            if (n >= 48 && sv == 0) {
                if (nxt < b1) {
                    pf = (const char *)(wp + (size_t)nxt * K * G * UB);
                    pfb = (size_t)nnb * K * G * UB * sizeof(float);
                } else {
                    pf = xpf;   /* blocked() reads pfb only with a pf */
                    pfb = xpf_bytes;
                }
            }
            /* RNN: the na panels are na unit blocks; else the gates of one */
            FN(blocked)(seg, nseg, na, pa, ps, ldx, K, (size_t)b * bso + sv, ldo, cell == FRNN_RNN ? bso : UB,
                        RMAX, pf, pfb, NULL, 0, 0);
        }
    }
}

/* The fused quantized step's epilogue: unit blocks [ub0, ub1) of every row,
 * the recurrent products dequantized in hg (rows ld floats apart), laid out
 * like the packed weights: [unit block][gate][UB]. */
static void FN(qepi)(const frnn_rstep *s, const float *hg, size_t ld, int ub0, int ub1, int n)
{
    const frnn_cellp *p = s->cp;
    if (n == 1 && s->cell != FRNN_RNN && p->fast && ub1 * UB <= p->H) {
        /* one row: pair unit chunks instead of rows */
        const size_t H = (size_t)p->H;
        const int u0 = ub0 * UB, u1 = ub1 * UB;
        int u = u0;
        for (; u + 2 * VL <= u1; u += 2 * VL) {
            const int v = u + VL;
            const size_t xu = FN(xoff)(s, u), xv = FN(xoff)(s, v);   /* hg: the same layout */
            const float *x = s->xrow[0];
            float *o = s->orow[0];
            if (s->cell == FRNN_LSTM)
                FN(lstm_fast2)(x + xu, x + xv, UB, hg + xu, hg + xv, UB,
                               p->bias + u, p->bias + v, H, s->c + u, s->c + v, s->hout + u, s->hout + v,
                               o ? o + u : NULL, o ? o + v : NULL);
            else
                FN(gru_fast2)(x + xu, x + xv, UB, hg + xu, hg + xv, UB,
                              p->bias + u, p->bias + v, p->b_hn + u, p->b_hn + v, H, s->hin + u, s->hin + v,
                              s->hout + u, s->hout + v, o ? o + u : NULL, o ? o + v : NULL);
        }
        if (u < u1) ub0 = u / UB;   /* an odd chunk left (VL < UB): the general path */
        else return;
    }
    if (s->cell != FRNN_RNN && (size_t)n * (size_t)(ub1 - ub0) * s->G * UB * sizeof(float) > 48 * 1024) {
        /* The group's products overflow L1: a row (or pair, for the paired
         * gate math) at a time, so each row's products, xg, c, h and output
         * lines are walked in order (unit-major, every 16 floats start a new
         * line in each of n rows, a stride the prefetchers do not follow).
         * Measured B=64 H=512 int8: LSTM +10-29 %, GRU +16 %. While they fit
         * in L1, and for the RNN's small per-chunk work, unit-major is
         * faster (8-17 %). */
        for (int r = 0; r < n; r += 2) {
            const int R = n - r < 2 ? n - r : 2;
            for (int ub = ub0; ub < ub1; ub++)
                for (int sv = 0; sv < UB; sv += VL) {
                    if (ub * UB + sv >= s->cp->H) break;
                    FN(epilogue)(s, s->cp, r, R, ub * UB + sv, 1,
                                 hg + (size_t)r * ld + (size_t)ub * s->G * UB + sv, ld, UB);
                }
        }
        return;
    }
    for (int ub = ub0; ub < ub1; ub++)
        for (int sv = 0; sv < UB; sv += VL) {
            if (ub * UB + sv >= s->cp->H) break;
            FN(epilogue)(s, s->cp, 0, n, ub * UB + sv, 1, hg + (size_t)ub * s->G * UB + sv, ld, UB);
        }
}
