/* Tree-LSTM forward over a forest (see tree.h).
 *
 * Plan of one call:
 *   1. depths by parent chasing (iterative, memoised, O(N)); cycles and
 *      out-of-range parents are reported with the offending node;
 *   2. a permutation that puts the levels back to back, deepest first, and
 *      inside a level the nodes with children first (only they need the
 *      recurrent GEMM), each group in node order; children lists (CSR) in
 *      node order, so a binary node's first child is its smallest-index one;
 *   3. one GEMM for the input projection of all nodes;
 *   4. per level, deepest first: the child aggregation (Child-Sum: sum of the
 *      children's h; binary: [h_left; h_right]), one GEMM over the level's
 *      inner nodes (Child-Sum adds one GEMM over the level below for the
 *      per-child forget gates), then the fused gate math;
 *   5. h and c scattered back to node order.
 *
 * The gate loops are compiled for AVX-512, AVX2 and baseline x86-64 and picked
 * at load time (GCC/Clang target_clones); the exponential is a branch-free
 * polynomial the compiler vectorises.
 */
#include "tree.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(__clang__) && \
    defined(__linux__) && !defined(FASTRNN_NO_CLONES)
#define TREE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TREE_CLONES
#endif

/* ---------------------------------------------------------------- math */

/* exp(x), x clamped to [-87.3, 88.4]; a few ulp (Cephes expf polynomial). */
static inline float tree_exp(float x)
{
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    x = x < -87.3365447505531f ? -87.3365447505531f : x;
    /* n = round(x / ln 2) with the 1.5 * 2^23 trick (no libm call: vectorises on plain SSE2) */
    float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - fx * 0.693359375f;
    r = r + fx * 2.12194440e-4f;
    float r2 = r * r;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r2 + r + 1.0f;
    int n = (int)fx;
    union { uint32_t u; float f; } p;
    p.u = (uint32_t)(n + 127) << 23;
    return y * p.f;
}

static inline float tree_sigmoid(float x) { return 1.0f / (1.0f + tree_exp(-x)); }

/* tanh(x) = 2 sigmoid(2x) - 1, absolute error ~1e-7 */
static inline float tree_tanh(float x) { return 2.0f / (1.0f + tree_exp(-2.0f * x)) - 1.0f; }

/* ------------------------------------------------------------ kernels */

/* The kernels index with size_t and precomputed row pointers: the extension is
 * built with -fwrapv (Python's flags), under which int-indexed loops like
 * a[2 * H + j] are not vectorised. */

/* Sum of the children's h (rows `ch[0..n)` of hbuf) into dst (H). */
TREE_CLONES
static void sum_rows(size_t H, const float *restrict hbuf, const int64_t *ch, int64_t n,
                     float *restrict dst)
{
    memset(dst, 0, H * sizeof(float));
    for (int64_t k = 0; k < n; k++) {
        const float *restrict src = hbuf + (size_t)ch[k] * H;
        for (size_t j = 0; j < H; j++) dst[j] += src[j];
    }
}

/* c = sigmoid(a_i) * tanh(a_u) and the output gate's pre-activation into po, where
 * a = xp + bx + g over the blocks i, o, u (g: zeros for a leaf). */
TREE_CLONES
static void iou_gates(size_t H, const float *restrict xp, const float *restrict bx,
                      const float *restrict g, float *restrict po, float *restrict c)
{
    const float *restrict xi = xp, *restrict xo = xp + H, *restrict xu = xp + 2 * H;
    const float *restrict bi = bx, *restrict bo = bx + H, *restrict bu = bx + 2 * H;
    const float *restrict gi = g, *restrict go = g + H, *restrict gu = g + 2 * H;
    for (size_t j = 0; j < H; j++) {
        c[j] = tree_sigmoid(xi[j] + bi[j] + gi[j]) * tree_tanh(xu[j] + bu[j] + gu[j]);
        po[j] = xo[j] + bo[j] + go[j];
    }
}

/* c += sigmoid(a + b + d) * cc (one child's forget-gated cell state). */
TREE_CLONES
static void forget_acc(size_t H, const float *restrict a, const float *restrict b,
                       const float *restrict d, const float *restrict cc, float *restrict c)
{
    for (size_t j = 0; j < H; j++) c[j] += tree_sigmoid(a[j] + b[j] + d[j]) * cc[j];
}

/* h = sigmoid(po) * tanh(c) */
TREE_CLONES
static void out_gate(size_t H, const float *restrict po, const float *restrict c, float *restrict h)
{
    for (size_t j = 0; j < H; j++) h[j] = tree_sigmoid(po[j]) * tree_tanh(c[j]);
}

/* c = NaN where a + b + d is NaN: a missing child's forget term, sigmoid(.)
 * times its zero cell state, is 0 unless the gate is NaN. */
TREE_CLONES
static void forget_nan(size_t H, const float *restrict a, const float *restrict b,
                       const float *restrict d, float *restrict c)
{
    for (size_t j = 0; j < H; j++) {
        const float s = a[j] + b[j] + d[j];
        c[j] = s != s ? s : c[j];
    }
}

/* Child-Sum gates of one node.
 *   xp (4H): the node's input projection, bx (4H) the folded biases,
 *   g (3H) the recurrent iou pre-activations (a leaf's: g_leaf, 4H, its
 *   4th block the zero child's recurrent forget term),
 *   fpre: per child its recurrent forget pre-activation row (H each; row of
 *   position p at (p - fbase) * H), ch/nch: children positions, cbuf: c of all
 *   positions. */
static void childsum_node(size_t H, const float *xp, const float *bx, const float *g, const float *fpre,
                          int64_t fbase, const int64_t *ch, int64_t nch, const float *cbuf,
                          float *tmp, float *c, float *h)
{
    iou_gates(H, xp, bx, g, tmp, c);
    for (int64_t k = 0; k < nch; k++)
        forget_acc(H, fpre + (size_t)(ch[k] - fbase) * H, xp + 3 * H, bx + 3 * H,
                   cbuf + (size_t)ch[k] * H, c);
    /* a leaf has one zero child (the reference's): its forget term */
    if (nch == 0) forget_nan(H, xp + 3 * H, bx + 3 * H, g + 3 * H, c);
    out_gate(H, tmp, c, h);
}

/* Gather [h_left; h_right] (2H) for one binary node; a missing child is zeros. */
static void binary_gather(size_t H, const float *hbuf, const int64_t *ch, int64_t nch, float *dst)
{
    for (int64_t l = 0; l < 2; l++) {
        if (l < nch)
            memcpy(dst + (size_t)l * H, hbuf + (size_t)ch[l] * H, H * sizeof(float));
        else
            memset(dst + (size_t)l * H, 0, H * sizeof(float));
    }
}

/* Binary gates of one node: g (5H) recurrent pre-activations [iou; f_left; f_right]
 * (zeros for a leaf), bf2 (2H) the per-position forget biases. */
static void binary_node(size_t H, const float *xp, const float *bx, const float *bf2, const float *g,
                        const int64_t *ch, int64_t nch, const float *cbuf, float *tmp, float *c,
                        float *h)
{
    iou_gates(H, xp, bx, g, tmp, c);
    /* tmp + H: fx(x) + fx.bias, shared by both positions */
    float *fx = tmp + H;
    const float *xf = xp + 3 * H, *bxf = bx + 3 * H;
    for (size_t j = 0; j < H; j++) fx[j] = xf[j] + bxf[j];
    for (int64_t l = 0; l < 2; l++) {
        if (l < nch) forget_acc(H, fx, bf2 + (size_t)l * H, g + (size_t)(3 + l) * H, cbuf + (size_t)ch[l] * H, c);
        else forget_nan(H, fx, bf2 + (size_t)l * H, g + (size_t)(3 + l) * H, c);
    }
    out_gate(H, tmp, c, h);
}

/* ---------------------------------------------------------- structure */

int frnn_tree_depths(int64_t N, const int64_t *parent, int64_t *depth, int64_t *max_depth,
                     int64_t *err_node)
{
    *max_depth = -1;
    if (N < 0) return FRNN_TREE_EINVAL;
    if (N == 0) return FRNN_TREE_OK;
    int64_t *d = depth ? depth : (int64_t *)malloc((size_t)N * sizeof(int64_t));
    int64_t *stack = (int64_t *)malloc((size_t)N * sizeof(int64_t));
    if (!d || !stack) {
        if (!depth) free(d);
        free(stack);
        return FRNN_TREE_ENOMEM;
    }
    int rc = FRNN_TREE_OK;
    for (int64_t i = 0; i < N; i++) {
        if (parent[i] < -1 || parent[i] >= N) {
            *err_node = i;
            rc = FRNN_TREE_EPARENT;
            goto done;
        }
        d[i] = -1; /* unknown */
    }
    int64_t mx = 0;
    for (int64_t i = 0; i < N; i++) {
        if (d[i] >= 0) continue;
        int64_t len = 0, v = i;
        while (v != -1 && d[v] == -1) {
            d[v] = -2; /* on the current path */
            stack[len++] = v;
            v = parent[v];
        }
        if (v != -1 && d[v] == -2) { /* came back onto the path: a cycle through v */
            *err_node = v;
            rc = FRNN_TREE_ECYCLE;
            goto done;
        }
        int64_t dv = v == -1 ? -1 : d[v];
        while (len) {
            v = stack[--len];
            d[v] = ++dv;
        }
        if (dv > mx) mx = dv;
    }
    *max_depth = mx;
done:
    if (!depth) free(d);
    free(stack);
    return rc;
}

/* ------------------------------------------------------------ forward */

void frnn_tree_leaf_g(const frnn_tree_net *net, float *g)
{
    const size_t H = (size_t)net->hidden_size;
    const int binary = net->kind == FRNN_TREE_BINARY;
    /* u's rows: child-sum [iou; f] (4H x H), binary [iou; f_left; f_right] (5H x 2H) */
    const size_t G = binary ? 5 * H : 4 * H, A = binary ? 2 * H : H;
    for (size_t j = 0; j < G; j++) {
        g[j] = 0.0f;
        for (size_t k = 0; k < A; k++)
            if (!__builtin_isfinite(net->u[j * A + k])) { g[j] = NAN; break; }
    }
}

int frnn_tree_forward(const frnn_tree_net *net, int64_t N, const float *x, const int64_t *parent,
                      float *h_out, float *c_out, frnn_tree_gemm_fn gemm, int nthreads, int64_t *err_node)
{
    const int H = net->hidden_size, I = net->input_size;
    const int binary = net->kind == FRNN_TREE_BINARY;
    if (N < 0 || N > INT_MAX || H <= 0 || I < 0 || (net->kind != FRNN_TREE_CHILDSUM && !binary))
        return FRNN_TREE_EINVAL;
    if (N == 0) return FRNN_TREE_OK;
    if ((int64_t)5 * H > INT_MAX / 2) return FRNN_TREE_EINVAL;

    int rc = FRNN_TREE_OK;
    int64_t D = -1;
    int64_t *depth = NULL, *nchild = NULL, *perm = NULL, *pos = NULL, *cptr = NULL, *cidx = NULL;
    int64_t *lstart = NULL, *linner = NULL, *fill = NULL;
    float *xp = NULL, *hb = NULL, *cb = NULL, *agg = NULL, *gbuf = NULL, *fbuf = NULL, *tmp = NULL, *zero = NULL;

    depth = (int64_t *)malloc((size_t)N * sizeof(int64_t));
    if (!depth) return FRNN_TREE_ENOMEM;
    rc = frnn_tree_depths(N, parent, depth, &D, err_node);
    if (rc != FRNN_TREE_OK) goto out;

    nchild = (int64_t *)calloc((size_t)N, sizeof(int64_t));
    perm = (int64_t *)malloc((size_t)N * sizeof(int64_t));
    pos = (int64_t *)malloc((size_t)N * sizeof(int64_t));
    cptr = (int64_t *)malloc((size_t)(N + 1) * sizeof(int64_t));
    cidx = (int64_t *)malloc((size_t)N * sizeof(int64_t));
    /* lstart[d]: first position of depth d (levels laid out deepest first);
     * linner[d]: number of nodes of depth d that have children. */
    lstart = (int64_t *)calloc((size_t)(D + 2), sizeof(int64_t));
    linner = (int64_t *)calloc((size_t)(D + 1), sizeof(int64_t));
    fill = (int64_t *)calloc((size_t)(2 * (D + 1)), sizeof(int64_t));
    if (!nchild || !perm || !pos || !cptr || !cidx || !lstart || !linner || !fill) {
        rc = FRNN_TREE_ENOMEM;
        goto out;
    }
    for (int64_t i = 0; i < N; i++)
        if (parent[i] >= 0) nchild[parent[i]]++;
    if (binary) {
        for (int64_t i = 0; i < N; i++)
            if (nchild[i] > 2) {
                *err_node = i;
                rc = FRNN_TREE_ECHILDREN;
                goto out;
            }
    }
    /* level sizes and inner-node counts */
    {
        int64_t *cnt = fill; /* cnt[d] total, cnt[D+1+d] inner */
        for (int64_t i = 0; i < N; i++) {
            cnt[depth[i]]++;
            if (nchild[i]) cnt[D + 1 + depth[i]]++;
        }
        int64_t p = 0;
        for (int64_t d = D; d >= 0; d--) {
            lstart[d] = p;
            linner[d] = cnt[D + 1 + d];
            p += cnt[d];
        }
        lstart[D + 1] = p; /* unused sentinel */
        /* fill pointers: inner nodes of depth d from lstart[d], leaves from lstart[d] + linner[d] */
        for (int64_t d = 0; d <= D; d++) {
            cnt[d] = lstart[d];
            cnt[D + 1 + d] = lstart[d] + linner[d];
        }
        for (int64_t i = 0; i < N; i++) {
            int64_t slot = nchild[i] ? depth[i] : D + 1 + depth[i];
            int64_t q = cnt[slot]++;
            perm[q] = i;
            pos[i] = q;
        }
    }
    /* children lists by parent position, each in increasing node index */
    cptr[0] = 0;
    for (int64_t q = 0; q < N; q++) cptr[q + 1] = cptr[q] + nchild[perm[q]];
    memset(nchild, 0, (size_t)N * sizeof(int64_t)); /* reused: per-position fill counts */
    for (int64_t i = 0; i < N; i++) {
        if (parent[i] < 0) continue;
        int64_t pq = pos[parent[i]];
        cidx[cptr[pq] + nchild[pq]++] = pos[i];
    }

    /* largest level (all nodes) and largest inner group */
    int64_t maxn = 0, maxin = 0;
    for (int64_t d = 0; d <= D; d++) {
        int64_t n = (d > 0 ? lstart[d - 1] : N) - lstart[d];
        if (n > maxn) maxn = n;
        if (linner[d] > maxin) maxin = linner[d];
    }
    const int G = binary ? 5 * H : 3 * H; /* recurrent GEMM width per inner node */
    const int A = binary ? 2 * H : H;     /* aggregated child state width */
    xp = (float *)malloc((size_t)N * 4 * H * sizeof(float));
    hb = (float *)malloc((size_t)N * H * sizeof(float));
    cb = (float *)malloc((size_t)N * H * sizeof(float));
    agg = (float *)malloc((size_t)(maxin ? maxin : 1) * A * sizeof(float));
    gbuf = (float *)malloc((size_t)(maxin ? maxin : 1) * G * sizeof(float));
    fbuf = binary ? NULL : (float *)malloc((size_t)(maxn ? maxn : 1) * H * sizeof(float));
    tmp = (float *)malloc((size_t)3 * H * sizeof(float));
    zero = (float *)calloc((size_t)5 * H, sizeof(float));   /* a leaf's g: 4H or 5H */
    if (!xp || !hb || !cb || !agg || !gbuf || (!binary && !fbuf) || !tmp || !zero) {
        rc = FRNN_TREE_ENOMEM;
        goto out;
    }

    /* input projection of every node (node order): one GEMM */
    gemm(net->w_x_p, 4 * H, I, x, (int)N, xp, nthreads);

    for (int64_t d = D; d >= 0; d--) {
        const int64_t s = lstart[d];
        const int64_t n = (d > 0 ? lstart[d - 1] : N) - s;
        const int64_t nin = linner[d];
        if (nin > 0) {
            for (int64_t k = 0; k < nin; k++) {
                const int64_t q = s + k;
                if (binary)
                    binary_gather(H, hb, cidx + cptr[q], cptr[q + 1] - cptr[q], agg + (size_t)k * A);
                else
                    sum_rows(H, hb, cidx + cptr[q], cptr[q + 1] - cptr[q], agg + (size_t)k * A);
            }
            gemm(net->u_p, G, A, agg, (int)nin, gbuf, nthreads);
            if (!binary) {
                /* forget pre-activations of every child: the whole level below, one GEMM */
                const int64_t cs = lstart[d + 1];
                const int64_t cn = s - cs;
                gemm(net->u_f_p, H, H, hb + (size_t)cs * H, (int)cn, fbuf, nthreads);
            }
        }
        const int64_t fbase = d < D ? lstart[d + 1] : 0;
        for (int64_t k = 0; k < n; k++) {
            const int64_t q = s + k;
            const int64_t node = perm[q];
            const float *g = k < nin ? gbuf + (size_t)k * G : net->g_leaf ? net->g_leaf : zero;
            const int64_t *ch = cidx + cptr[q];
            const int64_t nch = cptr[q + 1] - cptr[q];
            if (binary)
                binary_node(H, xp + (size_t)node * 4 * H, net->b_x, net->b_f2, g, ch, nch, cb, tmp,
                            cb + (size_t)q * H, hb + (size_t)q * H);
            else
                childsum_node(H, xp + (size_t)node * 4 * H, net->b_x, g, fbuf, fbase, ch, nch, cb, tmp,
                              cb + (size_t)q * H, hb + (size_t)q * H);
        }
    }
    for (int64_t i = 0; i < N; i++) {
        memcpy(h_out + (size_t)i * H, hb + (size_t)pos[i] * H, (size_t)H * sizeof(float));
        memcpy(c_out + (size_t)i * H, cb + (size_t)pos[i] * H, (size_t)H * sizeof(float));
    }

out:
    free(depth);
    free(nchild);
    free(perm);
    free(pos);
    free(cptr);
    free(cidx);
    free(lstart);
    free(linner);
    free(fill);
    free(xp);
    free(hb);
    free(cb);
    free(agg);
    free(gbuf);
    free(fbuf);
    free(tmp);
    free(zero);
    return rc;
}
