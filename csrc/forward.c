/* The time loop: for each layer and direction, the input projection of all
 * T steps, then per step h_{t-1} W_hh^T fused with the gate kernel (rjob;
 * the original-form GRU and the LSTM with proj_size take a second product a
 * step, W_hn (r * h) or W_hr h, fused likewise). Quantized layers of those
 * two cells run each product whole and the gate math apart instead. Runs
 * without the GIL, allocates once per call, and never touches Python.
 *
 * Variable lengths follow packed-sequence semantics: batch entries are
 * visited in order of decreasing length, so the sequences still running at
 * step s are a prefix of the sorted state buffers and each step's GEMM and
 * kernel only cover that prefix; finished sequences cost nothing. */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>
#include "kernels.h"

#include "team.h"
#include "quant.h"

size_t frnn_packed_whh_size(int G, int H, int K)
{
    return (size_t)((H + UB - 1) / UB) * K * G * UB;
}

void frnn_pack_whh(const float *w, int G, int H, int K, float *dst)
{
    const int nblk = (H + UB - 1) / UB;
    for (int b = 0; b < nblk; b++)
        for (int k = 0; k < K; k++)
            for (int g = 0; g < G; g++)
                for (int u = 0; u < UB; u++) {
                    const int j = b * UB + u;
                    dst[(((size_t)b * K + k) * G + g) * UB + u] =
                        j < H ? w[((size_t)g * H + j) * K + k] : 0.0f;
                }
}

int frnn_all_finite(const float *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!__builtin_isfinite(w[i])) return 0;
    return 1;
}

/* Whether direction dw's first step may skip h_{-1} W_hh^T: no initial
 * state (h is zero) and a finite W_hh (else 0 * inf is NaN, as the
 * training framework gives). */
static int zero_first_product(const frnn_call *call, const frnn_dir *dw)
{
    return call->h0 == NULL && dw->whh_finite;
}

/* The column-split projection (rjob.pcols): up to this many threads, row
 * chunks of at most PCOL_ROWS rows (x's chunk stays in L2 while W_ih's
 * panels pass). */
#define PCOL_MAXT 16
#define PCOL_ROWS 128

/* One direction's time loop on the fused recurrent path, run by every
 * thread of the team. Thread tid owns a fixed range of hidden-unit groups
 * (all gates of those units), so its slice of W_hh stays in its own cache
 * across steps and only h is exchanged (double-buffered). A step ends when
 * all groups are done, not when all threads arrive: a thread that finds the
 * step unfinished after a short wait claims the remaining groups itself, so
 * a preempted thread (a busy machine) never stalls the others. Groups are
 * claimed per step with a compare-and-swap of the group's step counter. */
typedef struct {
    const frnn_kernels *K;
    frnn_cellp cp;
    const float *wp;
    const float *wp_ih;    /* packed W_ih */
    const float *x;        /* layer input, rows of in_w floats */
    int in_w;
    size_t rows, pchunk, pitch;
    long pnext, pdone;     /* projection chunks claimed / finished */
    /* xg's layout. 0: a row per row of x, pitch floats, unit blocks G*UB
     * apart. 1 (many rows): step by step, and within a step unit block by
     * unit block, the B rows of a block G*UB apart, so the epilogue of a
     * block reads one contiguous run of xg instead of a line or so from
     * each of B rows a page apart. */
    int xbm;
    /* 1: no projection phase; each step adds its own rows' input product
     * into the recurrent one (frnn_rstep.xin), XSTEP_ROWS rows at a time */
    int xstep;
    /* 1 (few rows, hidden-parallel): the projection is split by columns,
     * each thread's unit blocks first (rjob_project), pu[u * 8] counting
     * the row chunks of thread u's blocks claimed (a cache line each) */
    int pcols;
    long pu[PCOL_MAXT * 8];
    /* Steps per projection chunk, or 0: all steps' xg at once. With tc, xg
     * holds two chunks (halves of tc steps each, chunk c in half c % 2): the
     * threads project chunk c when they reach its first step, while a
     * thread still in chunk c - 1's last step reads the other half; the
     * per-step barrier keeps them from being further apart. Batch-parallel,
     * each thread projects its own rows (rjob_project_rows). See xslot. */
    int tc;
    int tspan;             /* steps of the time loop: T, or the (common) length reversed */
    int cell, G, H, T, B, reverse, nblk, grp, ngrp, Wd, d;
    /* Ho: h's width (the projection's P, else H). Two products a step (the
     * original-form GRU, the LSTM with projection): the second (wp2, over
     * nblk2 output blocks of Ho units, ngrp2 groups of grp2) starts when
     * every group of the first is done; zb holds z_t (GRU) and ah its left
     * operand (r_t * h_{t-1}, or the unprojected h), rows H apart. */
    int Ho, two, nblk2, grp2, ngrp2;
    const float *wp2;
    float *zb, *ah;
    size_t st, sb;
    const int64_t *lens;
    const int *perm;
    const float *xg;
    float *dst;
    float *hb[2];
    float *c;
    const frnn_qmat *q;    /* quantized W_hh ([unit block][gate][16] rows), or NULL */
    char *qscr;            /* per thread: the quantized h_{t-1} */
    size_t qscr_bytes;
    float *hgq;            /* dequantized recurrent products (B, G*H) */
    int bpar;              /* batch-parallel: each thread its own rows */
    int hzero;             /* the initial h is zero (no h0 given) */
    char *hq[2];           /* int8 batch 1: h block-quantized (frnn_hq_*), or NULL */
    size_t hqb;
    char *hbf[2];          /* bf16, hidden-parallel: h in bf16, rows hbf_ld bytes apart, or NULL */
    size_t hbf_ld;
    /* per thread (slot): B pointers each, slots pstride pointers apart
     * (whole cache lines: every step each thread rewrites its own) */
    const float **xrows;
    float **orows;
    size_t pstride;
    int *claim;            /* per group: the number of steps it has been claimed for
                            * (CLAIM_PAD ints apart: one cache line per group) */
    /* groups finished, over all steps: a line of its own, since every add
     * takes the line from the other core, whose reads of the fields above
     * (every group reads several) would otherwise miss after each add */
    long done __attribute__((aligned(64)));
    char done_pad[64 - sizeof(long)];
    int joined;            /* threads that have entered the job (rjob_exec) */
} rjob;

#define STEAL_SPINS 256
/* Rows per chunk of a step that projects its own input (rjob.xstep). */
#define XSTEP_ROWS 96
/* Auto: steps project their own input from this many rows a thread on
 * (one thread or batch-parallel, LSTM): measured alternated, 1 thread,
 * T=50 B=256 H=512 1-2 % faster, B=64 H=256-512 1-4 %, H=1024 1 % slower;
 * 2 threads B=128-256 1-5 %; the all-steps xg (T*B*4H floats, 105 MB at
 * B=256) is not allocated at all. Not GRU (its
 * candidate keeps the products apart), not RNN (3-6 % slower), not
 * hidden-parallel (B=128 H=1024, 2 threads: 4 % slower: every thread reads
 * all rows of x_t for every block). */
#define XSTEP_MIN_ROWS 64
/* From this batch size on, xg is laid out block by block within a step
 * (rjob.xbm); below it a step's rows of a block are a few lines anyway, and
 * the projection's row chunks would be cut into short pieces at every step. */
#define XBM_MIN_ROWS 16
/* a projection chunk (at most 96 rows) cut at every step */
_Static_assert(96 / XBM_MIN_ROWS + 2 <= FRNN_ROWS_MAX, "projection segments");
/* Groups' claim counters a cache line apart: each thread claims its own
 * groups every step, and counters sharing a line would bounce it between
 * the cores at every claim. */
#define CLAIM_PAD 16

/* One past group g's last unit block. */
static inline int grp_end(const rjob *j, int g)
{
    return (g + 1) * j->grp < j->nblk ? (g + 1) * j->grp : j->nblk;
}

/* This thread's quantized h_{t-1} (fused quantized path). */
typedef struct {
    const void *qa;
    size_t qld;
    const float *sa;
} qview;

/* Runs group g for step s unless someone has; returns 1 if this call ran
 * it. The caller publishes finished groups in j->done (one atomic add per
 * batch: every add moves the counter's cache line between the cores). ng:
 * the group this thread runs next, or -1 (its weights are prefetched). */
static inline int rjob_group(rjob *j, const frnn_rstep *rs, const qview *qv, int g, int s, int n, int ng)
{
    int expect = s;
    if (__atomic_compare_exchange_n(&j->claim[(size_t)g * CLAIM_PAD], &expect, s + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
        const int b1 = grp_end(j, g);
        if (j->q) {
            /* all gates of unit blocks [g * grp, b1): rows of W are contiguous */
            const size_t ld = (size_t)j->G * j->H;
            const size_t q0 = (size_t)g * j->grp * j->G, q1 = (size_t)b1 * j->G;
            if (j->hq[0] || j->hbf[0]) {
                /* h_{t-1} as the groups left it (int8 batch 1: in blocks;
                 * bf16: rounded), the gate math, then this group's units of
                 * h_t quantized while hot (odd int8 steps walk backwards, as
                 * below) */
                const int u0 = g * j->grp * UB, u1 = b1 * UB < j->H ? b1 * UB : j->H;
                if (j->hq[0]) frnn_hq_gemv(j->q, j->hq[s & 1], j->hgq, q0, q1, s & 1);
                else frnn_qgemm_part(j->q, n, j->hbf[s & 1], j->hbf_ld, NULL, j->hgq, (int)ld, q0, q1);
                j->K->qepi(rs, j->hgq, ld, g * j->grp, b1, n);
                if (j->hq[0]) frnn_hq_quantize(rs->hout, u0, u1, j->H, j->hq[(s + 1) & 1]);
                else frnn_qbf16_cols(j->q, n, rs->hout, j->H, u0, u1, j->hbf[(s + 1) & 1], j->hbf_ld);
                return 1;
            }
            if ((s & 1) && n == 1 && j->q->wtype == FRNN_W_I8) {
                /* Batch 1, int8 (vector kernels, 8 blocks a call): the
                 * backward walk goes backwards within the group too, so
                 * the blocks used last, still in L1, come first. */
                for (size_t e = q1, b; e > q0; e = b) {
                    b = e >= q0 + 8 ? e - 8 : q0;
                    frnn_qgemm_part(j->q, n, qv->qa, qv->qld, qv->sa, j->hgq, (int)ld, b, e);
                }
            } else {
                frnn_qgemm_part(j->q, n, qv->qa, qv->qld, qv->sa, j->hgq, (int)ld, q0, q1);
            }
            j->K->qepi(rs, j->hgq, ld, g * j->grp, b1, n);
        } else {
            j->K->rstep(rs, g * j->grp, b1, n, ng >= 0 ? ng * j->grp : -1);
        }
        return 1;
    }
    return 0;
}

/* The xg rows of a step that projects its own input. */
static const float xzero[4 * UB] __attribute__((aligned(64)));

/* xg's step slot of time t: t itself, or with projection chunks (rjob.tc)
 * its place in its chunk's half (a chunk's times are consecutive: forward,
 * or every sequence the same length). */
static inline size_t xslot(const rjob *j, size_t t)
{
    if (!j->tc) return t;
    const size_t tc = (size_t)j->tc, T = (size_t)j->tspan;
    const size_t c = (j->reverse ? T - 1 - t : t) / tc;
    const size_t tmin = j->reverse ? (T > (c + 1) * tc ? T - (c + 1) * tc : 0) : c * tc;
    return (c & 1) * tc + (t - tmin);
}

/* Offset of the xg row of step t, batch entry i, in the xbm layout. */
static inline size_t xbm_row(const rjob *j, size_t t, size_t i)
{
    return xslot(j, t) * (size_t)j->B * j->pitch + i * (size_t)j->G * UB;
}

/* Offset of the xg row of x's row r in the plain layout (with chunks: r is
 * t * B + i, x time-major or B = 1). */
static inline size_t plain_row(const rjob *j, size_t r)
{
    if (!j->tc) return r * j->pitch;
    const size_t B = (size_t)j->B, t = r / B;
    return (xslot(j, t) * B + (r - t * B)) * j->pitch;
}

/* Step s for sorted rows [i0, i0 + n): their xg and output rows (into xr,
 * orr from i0 on) and the state rows, as rs. */
static void rjob_view(const rjob *j, int s, int i0, int n, const float **xr, float **orr, frnn_rstep *rs)
{
    const int Ho = j->Ho;
    for (int i = i0; i < i0 + n; i++) {
        const size_t t = j->reverse ? (size_t)(j->lens[i] - 1 - s) : (size_t)s;
        const size_t row = t * j->st + (size_t)j->perm[i] * j->sb;
        if (j->xstep) xr[i] = xzero;
        else xr[i] = j->xg + (j->xbm ? xbm_row(j, t, (size_t)j->perm[i]) : plain_row(j, row));
        orr[i] = j->dst + row * j->Wd + (size_t)j->d * Ho;
    }
    rs->xbs = j->xstep ? 0 : (size_t)j->G * UB * (j->xbm ? (size_t)j->B : 1);
    rs->xin = NULL;
    if (j->xstep && n > 0) {
        /* all rows the same length, so perm is the identity and t is one */
        const size_t t = j->reverse ? (size_t)(j->lens[i0] - 1 - s) : (size_t)s;
        rs->xin = j->x + (t * j->st + (size_t)i0 * j->sb) * (size_t)j->in_w;
        rs->wpx = j->wp_ih;
        rs->ldx = j->sb * (size_t)j->in_w;
        rs->kx = j->in_w;
    }
    rs->cell = j->cell;
    rs->G = j->G;
    rs->K = Ho;
    rs->wp = j->wp;
    rs->cp = &j->cp;
    rs->hin = j->hb[s & 1] + (size_t)i0 * Ho;
    rs->hout = j->hb[(s + 1) & 1] + (size_t)i0 * Ho;
    rs->c = j->c + (size_t)i0 * j->H;
    rs->zb = rs->rh = NULL;
    rs->xrow = xr + i0;
    rs->orow = orr + i0;
    rs->hzero = s == 0 && j->hzero;
}

/* A step of a two-product cell (rjob.two) for the rows of rs (from i0 on):
 * its first half rs writes the second's left operand, r2 the step's h_t
 * and outputs. */
static void rjob_view2(const rjob *j, int i0, frnn_rstep *rs, frnn_rstep2 *r2)
{
    const size_t H = (size_t)j->H;
    r2->cell = j->cell;
    r2->K = j->H;
    r2->N = j->Ho;
    r2->wp = j->wp2;
    r2->cp = &j->cp;
    r2->a = j->ah + (size_t)i0 * H;
    r2->hout = rs->hout;
    r2->xrow = rs->xrow;
    r2->xbs = rs->xbs;
    r2->orow = rs->orow;
    r2->z = r2->hin = NULL;
    if (j->cell == FRNN_LSTM) {
        rs->hout = j->ah + (size_t)i0 * H;   /* o_t * h(c_t), projected next */
        rs->orow = NULL;
    } else {
        rs->G = 2;                            /* W_hh's r, z rows; W_hn is wp2 */
        rs->zb = j->zb + (size_t)i0 * H;
        rs->rh = j->ah + (size_t)i0 * H;
        r2->z = rs->zb;
        r2->hin = rs->hin;
    }
}

/* Runs group g of a step's second product (rjob.two) for step s unless
 * someone has; as rjob_group. */
static inline int rjob_group2(rjob *j, const frnn_rstep2 *r2, int g, int s, int n, int ng)
{
    int expect = s;
    if (__atomic_compare_exchange_n(&j->claim[(size_t)(j->ngrp + g) * CLAIM_PAD], &expect, s + 1, 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
        const int b1 = (g + 1) * j->grp2 < j->nblk2 ? (g + 1) * j->grp2 : j->nblk2;
        j->K->rstep2(r2, g * j->grp2, b1, n, ng >= 0 ? ng * j->grp2 : -1);
        return 1;
    }
    return 0;
}

/* Waits until j->done reaches target; a thread that finds the others late
 * runs the groups outside its own [g0, g1) that nobody has claimed yet
 * (the first product's when r2 is NULL, else the second's), from the far
 * end of the others' ranges, where their owners will reach last. */
static void rjob_sync(rjob *j, const frnn_rstep *rs, const frnn_rstep2 *r2, const qview *qv, long target,
                      int g0, int g1, int s, int n, int nt)
{
    const int ng = r2 ? j->ngrp2 : j->ngrp;
    /* a thread of the job has not started yet (a worker slow to wake):
     * take its groups at once rather than after STEAL_SPINS every step */
    int spins = __atomic_load_n(&j->joined, __ATOMIC_ACQUIRE) < nt ? STEAL_SPINS - 1 : 0;
    while (__atomic_load_n(&j->done, __ATOMIC_ACQUIRE) < target) {
        if (++spins == STEAL_SPINS) {
            for (int q = ng - 1; q >= 0; q--)
                if ((q < g0 || q >= g1) && (r2 ? rjob_group2(j, r2, q, s, n, -1) : rjob_group(j, rs, qv, q, s, n, -1)))
                    __atomic_add_fetch(&j->done, 1, __ATOMIC_RELEASE);
        } else if (spins > 4 * STEAL_SPINS) {
            sched_yield();
        } else {
            cpu_relax();
        }
    }
}

/* The input projection of nseg segments of x's rows into xg, unit blocks
 * [b0, b1); xpf_bytes at xpf prefetched while the last block runs. */
static void rjob_proj_segs(const rjob *j, const frnn_rows *seg, int nseg, int b0, int b1, const char *xpf,
                           size_t xpf_bytes)
{
    /* a segment's rows of x: sb apart (xbm) or consecutive */
    const size_t iw = (size_t)j->in_w, bs = (size_t)j->G * UB;
    j->K->proj(j->wp_ih, j->G, j->cell, b0, b1, j->in_w, seg, nseg, j->xbm ? j->sb * iw : iw,
               j->xbm ? bs : j->pitch, j->xbm ? (size_t)j->B * bs : bs, xpf, xpf_bytes);
}

/* Rows [r0, r1) of the input projection (with xbm counted step-major,
 * t * B + i), unit blocks [b0, b1); x's rows [n0, n1) are this thread's
 * next (prefetched meanwhile where they are one run of x). */
static void rjob_proj(const rjob *j, size_t r0, size_t r1, int b0, int b1, size_t n0, size_t n1)
{
    const size_t iw = (size_t)j->in_w;
    frnn_rows seg[FRNN_ROWS_MAX];
    int nseg = 0;
    if (!j->xbm) {
        seg[nseg++] = (frnn_rows){j->x + r0 * iw, (float *)j->xg + plain_row(j, r0), (int)(r1 - r0)};
    } else {
        /* one segment per step (x's rows sb apart), all of them past each
         * slice of W_ih */
        const size_t B = (size_t)j->B;
        for (size_t r = r0, e; r < r1; r = e) {
            const size_t t = r / B, i0 = r - t * B;
            e = (t + 1) * B < r1 ? (t + 1) * B : r1;
            seg[nseg++] = (frnn_rows){j->x + (t * j->st + i0 * j->sb) * iw, (float *)j->xg + xbm_row(j, t, i0),
                                      (int)(e - r)};
        }
    }
    const int run = !j->xbm || (j->st == (size_t)j->B && j->sb == 1);
    const char *xpf = run && n1 > n0 ? (const char *)(j->x + n0 * iw) : NULL;
    rjob_proj_segs(j, seg, nseg, b0, b1, xpf, (n1 - n0) * iw * sizeof(float));
}

/* Claims the next of counter *ctr's pieces below limit: its index, or -1. */
static inline long claim_below(long *ctr, long limit)
{
    long k = __atomic_load_n(ctr, __ATOMIC_RELAXED);
    while (k < limit)
        if (__atomic_compare_exchange_n(ctr, &k, k + 1, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return k;
    return -1;
}

/* A projection chunk's rows in pieces of pc rows, the last tail of them
 * (at most) in pieces of fine rows. */
typedef struct {
    size_t pc, fine, tail;
} piecing;

static long pieces_in(const piecing *p, size_t n)
{
    const size_t tail = n < p->tail ? n : p->tail;
    return (long)((n - tail + p->pc - 1) / p->pc + (tail + p->fine - 1) / p->fine);
}

/* Rows [*r0, *r1) of piece k of rows [lo, hi) (empty past the last). */
static void piece_rows(const piecing *p, size_t lo, size_t hi, long k, size_t *r0, size_t *r1)
{
    const size_t n = hi - lo, tail = n < p->tail ? n : p->tail, split = hi - tail;
    const size_t nc = (n - tail + p->pc - 1) / p->pc;
    if ((size_t)k < nc) {
        *r0 = lo + (size_t)k * p->pc;
        *r1 = *r0 + p->pc < split ? *r0 + p->pc : split;
    } else {
        const size_t o = ((size_t)k - nc) * p->fine;
        *r0 = o < tail ? split + o : hi;
        *r1 = *r0 + p->fine < hi ? *r0 + p->fine : hi;
    }
}

/* Phase 1 of projection chunk c (rjob.tc; without chunks, c = 0: all steps):
 * its rows in pieces claimed on demand, then a wait until every piece is
 * written. Pieces are numbered on across chunks, a fixed number a chunk
 * (the last chunk's surplus ones empty), and claimed only below the
 * chunk's end: a thread early for the next chunk must not take its pieces
 * while the others may still read that chunk's half of xg. */
static void rjob_project(rjob *j, int tid, int nt, int c)
{
    const size_t B = (size_t)j->B;
    size_t lo = 0, hi = j->rows, crows = j->rows;
    if (j->tc) {
        const size_t T = (size_t)j->tspan, tc = (size_t)j->tc;
        const size_t s0 = (size_t)c * tc, s1 = s0 + tc < T ? s0 + tc : T;
        lo = (j->reverse ? T - s1 : s0) * B;
        hi = (j->reverse ? T - s0 : s1) * B;
        crows = tc * B;
    }
    if (!crows) return;   /* no projection phase (rjob.xstep, quantized) */
    long target;
    if (j->pcols) {
        /* By columns: each thread first the unit blocks it owns in the time
         * loop, for all rows, so each step's xg for them is in its own
         * cache and every panel of W_ih serves all the rows of a chunk;
         * then it helps with the others' row chunks (a preempted thread
         * holds nobody up). */
        const size_t prc = (crows + PCOL_ROWS - 1) / PCOL_ROWS, pch = (crows + prc - 1) / prc;
        target = (long)((size_t)nt * prc) * (c + 1);
        for (int k = 0; k < nt; k++) {
            const int u = (tid + k) % nt;
            const int ug0 = (int)((long)j->ngrp * u / nt), ug1 = (int)((long)j->ngrp * (u + 1) / nt);
            const int ub0 = ug0 * j->grp, ub1 = ug1 > ug0 ? grp_end(j, ug1 - 1) : ub0;
            for (long q; (q = claim_below(&j->pu[u * 8], (long)prc * (c + 1))) >= 0;) {
                const size_t r0 = lo + (size_t)(q - (long)prc * c) * pch;
                if (r0 < hi) rjob_proj(j, r0, r0 + pch < hi ? r0 + pch : hi, ub0, ub1, 0, 0);
                __atomic_add_fetch(&j->pdone, 1, __ATOMIC_RELEASE);
            }
        }
    } else {
        /* Each thread claims its next piece before it starts on the one
         * it holds, so that piece's rows of x come in meanwhile. Chunks on
         * several threads end in pieces of a quarter: every chunk's end
         * waits for its last piece (measured B=64 H=256 LSTM, T=100, 2
         * threads, 4 chunks: 2-3 % slower than one projection without;
         * even with). */
        const piecing pg = {j->pchunk, j->pchunk / 4 > 16 ? j->pchunk / 4 : 16,
                            j->tc && nt > 1 ? (size_t)nt * j->pchunk : 0};
        const long np = pieces_in(&pg, crows), base = np * c;
        target = base + np;
        for (long q = claim_below(&j->pnext, target); q >= 0;) {
            const long nx = claim_below(&j->pnext, target);
            size_t r0, r1, n0 = 0, n1 = 0;
            piece_rows(&pg, lo, hi, q - base, &r0, &r1);
            if (nx >= 0) piece_rows(&pg, lo, hi, nx - base, &n0, &n1);
            if (r0 < r1) rjob_proj(j, r0, r1, 0, j->nblk, n0, n1);
            __atomic_add_fetch(&j->pdone, 1, __ATOMIC_RELEASE);
            q = nx;
        }
    }
    for (int spins = 0; __atomic_load_n(&j->pdone, __ATOMIC_ACQUIRE) < target; spins++) {
        if (spins < 4 * STEAL_SPINS) cpu_relax();
        else sched_yield();
    }
}

/* Batch-parallel: projection chunk c of rows [i0, i1) only, by the thread
 * that owns them (no other thread reads them, so none is waited for): a
 * segment per step, up to FRNN_ROWS_MAX steps (about 96 rows) past each
 * panel of W_ih. */
static void rjob_project_rows(const rjob *j, int c, int i0, int i1)
{
    const size_t T = (size_t)j->tspan, tc = (size_t)j->tc, iw = (size_t)j->in_w, B = (size_t)j->B;
    const size_t s0 = (size_t)c * tc, s1 = s0 + tc < T ? s0 + tc : T, n = (size_t)(i1 - i0);
    const size_t t0 = j->reverse ? T - s1 : s0, t1 = j->reverse ? T - s0 : s1;
    size_t per = n ? 96 / n : 1;
    per = per < 1 ? 1 : per > FRNN_ROWS_MAX ? FRNN_ROWS_MAX : per;
    for (size_t t = t0; t < t1; t += per) {
        frnn_rows seg[FRNN_ROWS_MAX];
        int nseg = 0;
        for (size_t u = t; u < t1 && u < t + per; u++)
            seg[nseg++] = (frnn_rows){j->x + (u * j->st + (size_t)i0 * j->sb) * iw,
                                      (float *)j->xg + (j->xbm ? xbm_row(j, u, (size_t)i0)
                                                               : plain_row(j, u * B + (size_t)i0)),
                                      (int)n};
        /* the next call's first step of x, while the last panels run (one run of rows) */
        const size_t nx = t + per;
        const char *xpf = nx < t1 && j->sb == 1 ? (const char *)(j->x + (nx * j->st + (size_t)i0) * iw) : NULL;
        rjob_proj_segs(j, seg, nseg, 0, j->nblk, xpf, xpf ? n * iw * sizeof(float) : 0);
    }
}

/* Thread tid of nt working on job j; slot picks its private row arrays. */
static void rjob_exec(rjob *j, int tid, int nt, int slot)
{
    __atomic_add_fetch(&j->joined, 1, __ATOMIC_RELEASE);
    const int B = j->B, H = j->H, ngrp = j->ngrp;
    const int g0 = (int)((long)ngrp * tid / nt), g1 = (int)((long)ngrp * (tid + 1) / nt);
    const float **xr = j->xrows + (size_t)slot * j->pstride;
    float **orr = j->orows + (size_t)slot * j->pstride;
    if (!j->tc) rjob_project(j, tid, nt, 0);
    if ((j->bpar && nt > 1) || (j->xstep && nt == 1)) {
        /* Batch-parallel: this thread's own rows, all hidden units, its own
         * time loop; no barrier and no h exchange at all. (And one thread
         * whose steps project their own input: rows in chunks, below.) */
        const int i0 = (int)((long)B * tid / nt), i1 = (int)((long)B * (tid + 1) / nt);
        int nl = i1 - i0;
        for (int s = 0; s < j->T; s++) {
            while (nl > 0 && j->lens[i0 + nl - 1] <= s) nl--;
            if (nl == 0) break;
            if (j->tc && s % j->tc == 0) rjob_project_rows(j, s / j->tc, i0, i0 + nl);
            /* A step that projects its own input reads x_t's rows as well
             * as h_{t-1}'s for every unit block: in even chunks of at most
             * XSTEP_ROWS rows, both stay in L2 while W streams past. */
            const int nc = j->xstep ? (nl + XSTEP_ROWS - 1) / XSTEP_ROWS : 1;
            frnn_rstep rs;
            if (nc == 1) rjob_view(j, s, i0, nl, xr, orr, &rs);
            if (j->two) {
                /* both products over all blocks, the second's walked
                 * backwards on odd steps too */
                frnn_rstep2 r2;
                rjob_view2(j, i0, &rs, &r2);
                if (s & 1)
                    for (int g = ngrp - 1; g >= 0; g--)
                        j->K->rstep(&rs, g * j->grp, grp_end(j, g), nl, g > 0 ? (g - 1) * j->grp : -1);
                else
                    j->K->rstep(&rs, 0, j->nblk, nl, -1);
                const int g2 = j->grp2;
                if (s & 1)
                    for (int b = (j->nblk2 - 1) / g2 * g2; b >= 0; b -= g2)
                        j->K->rstep2(&r2, b, b + g2 < j->nblk2 ? b + g2 : j->nblk2, nl, b > 0 ? b - g2 : -1);
                else
                    j->K->rstep2(&r2, 0, j->nblk2, nl, -1);
                continue;
            }
            if (j->q) {
                /* its own rows quantized, then group by group the product
                 * and the gate math while the group's products are hot */
                qview qv;
                float *sa;
                char *qa = j->qscr + (size_t)slot * j->qscr_bytes;
                qv.qld = frnn_qquantize(j->q, nl, rs.hin, H, qa, &sa);
                qv.qa = qa;
                qv.sa = sa;
                const size_t ld = (size_t)j->G * H;
                float *hg = j->hgq + (size_t)i0 * ld;
                for (int k = 0; k < ngrp; k++) {
                    const int g = (s & 1) ? ngrp - 1 - k : k;
                    const int b1 = grp_end(j, g);
                    frnn_qgemm_part(j->q, nl, qv.qa, qv.qld, qv.sa, hg, (int)ld,
                                    (size_t)g * j->grp * j->G, (size_t)b1 * j->G);
                    j->K->qepi(&rs, hg, ld, g * j->grp, b1, nl);
                }
                continue;
            }
            for (int c = 0; c < nc; c++) {
                const int c0 = i0 + (int)((long)nl * c / nc), c1 = i0 + (int)((long)nl * (c + 1) / nc);
                if (nc > 1) rjob_view(j, s, c0, c1 - c0, xr, orr, &rs);
                if (s & 1)
                    for (int g = ngrp - 1; g >= 0; g--) {
                        const int b1 = grp_end(j, g);
                        j->K->rstep(&rs, g * j->grp, b1, c1 - c0, g > 0 ? (g - 1) * j->grp : -1);
                    }
                else
                    j->K->rstep(&rs, 0, j->nblk, c1 - c0, -1);
            }
        }
        if (j->q) frnn_q_release_tiles();
        return;
    }
    int n = B;
    for (int s = 0; s < j->T; s++) {
        while (n > 0 && j->lens[n - 1] <= s) n--;
        if (n == 0) break;
        if (j->tc && s % j->tc == 0) rjob_project(j, tid, nt, s / j->tc);
        frnn_rstep rs;
        frnn_rstep2 r2;
        rjob_view(j, s, 0, n, xr, orr, &rs);
        if (j->two) rjob_view2(j, 0, &rs, &r2);
        qview qv = {NULL, 0, NULL};
        /* The other thread's part of h_{t-1} starts on its way now, all of
         * it at once rather than line by line as the product reaches it
         * (int8: it arrives while this thread multiplies its own blocks,
         * each output starting at its own); fp32 only with a few rows. */
        const char *hp = NULL;
        size_t hl = 0;
        if (j->hq[0] || j->hbf[0]) {
            hp = j->hq[0] ? j->hq[s & 1] : j->hbf[s & 1];
            hl = j->hq[0] ? j->hqb : (size_t)n * j->hbf_ld;
        } else if (!j->q && nt > 1 && (size_t)n * j->Ho * sizeof(float) <= 8192) {
            hp = (const char *)rs.hin;
            hl = (size_t)n * j->Ho * sizeof(float);
        }
        for (size_t o = 0; o < hl; o += 64) __builtin_prefetch(hp + o);
        if (j->q && !j->hq[0] && !j->hbf[0]) {
            /* every thread quantizes the whole h_{t-1} itself: cheaper than
             * a second barrier per step */
            float *sa;
            char *qa = j->qscr + (size_t)slot * j->qscr_bytes;
            qv.qld = frnn_qquantize(j->q, n, rs.hin, H, qa, &sa);
            qv.qa = qa;
            qv.sa = sa;
        }
        long mine = 0;
        if (s & 1) {
            /* Odd steps walk the range backwards: when a thread's slice of W
             * does not fit its L2, the panels used last are still cached and
             * are used first (a cyclic walk would evict each one just before
             * it is needed again). */
            for (int g = g1 - 1; g >= g0; g--) mine += rjob_group(j, &rs, &qv, g, s, n, g > g0 ? g - 1 : -1);
        } else {
            for (int g = g0; g < g1; g++) mine += rjob_group(j, &rs, &qv, g, s, n, g + 1 < g1 ? g + 1 : -1);
        }
        if (mine) __atomic_add_fetch(&j->done, mine, __ATOMIC_RELEASE);
        const long per = (long)ngrp + (j->two ? j->ngrp2 : 0);   /* groups a step */
        if (nt > 1) rjob_sync(j, &rs, NULL, &qv, (long)s * per + ngrp, g0, g1, s, n, nt);
        if (!j->two) continue;
        /* the second product, once all of the first's outputs are written
         * (the others' part of its operand asked for at once, as h above) */
        if (hl) {
            const size_t al = (size_t)n * H * sizeof(float);
            for (size_t o = 0; al <= 8192 && o < al; o += 64) __builtin_prefetch((const char *)r2.a + o);
        }
        const int h0 = (int)((long)j->ngrp2 * tid / nt), h1 = (int)((long)j->ngrp2 * (tid + 1) / nt);
        mine = 0;
        if (s & 1)
            for (int g = h1 - 1; g >= h0; g--) mine += rjob_group2(j, &r2, g, s, n, g > h0 ? g - 1 : -1);
        else
            for (int g = h0; g < h1; g++) mine += rjob_group2(j, &r2, g, s, n, g + 1 < h1 ? g + 1 : -1);
        if (mine) __atomic_add_fetch(&j->done, mine, __ATOMIC_RELEASE);
        if (nt > 1) rjob_sync(j, &rs, &r2, &qv, (long)(s + 1) * per, h0, h1, s, n, nt);
    }
    if (j->q) frnn_q_release_tiles();
}

/* A single-gate product on the team: the rows of r2 (its a, hout and orow
 * from row 0) times r2's packed W, with the fused path's second-product
 * kernel (cell FRNN_LSTM: a plain store). Many rows: each thread its own
 * rows, in chunks of GEMM_ROWS whose rows of A stay in L2 while all of W
 * passes; few: each thread whole groups of 4 output blocks for all rows, so
 * its share of W stays in its own cache. Used for the quantized LSTM's
 * float32 projection W_hr h and for the Tree-LSTM's products
 * (frnn_gemm_packed), so no BLAS threads run beside fastrnn's own. */
#define GEMM_ROWS 128
typedef struct {
    const frnn_kernels *K;
    frnn_rstep2 r2;
    int nblk, n, byrows;
} projjob;

static void projjob_run(void *arg, int tid, int nt)
{
    const projjob *p = (const projjob *)arg;
    if (p->byrows) {
        const int r0 = (int)((long)p->n * tid / nt), r1 = (int)((long)p->n * (tid + 1) / nt);
        for (int c = r0; c < r1; c += GEMM_ROWS) {
            frnn_rstep2 r = p->r2;
            r.a += (size_t)c * r.K;
            r.hout += (size_t)c * r.N;
            if (r.orow) r.orow += c;
            p->K->rstep2(&r, 0, p->nblk, r1 - c < GEMM_ROWS ? r1 - c : GEMM_ROWS, -1);
        }
        return;
    }
    const int ng = (p->nblk + 3) / 4;
    const int b0 = ng * tid / nt * 4, b1 = ng * (tid + 1) / nt * 4;
    if (b0 < b1) p->K->rstep2(&p->r2, b0, b1 < p->nblk ? b1 : p->nblk, p->n, -1);
}

/* Runs r2 over n rows on up to nthreads threads (tiny products, as in
 * frnn_qgemm, on the caller alone). */
static void projjob_go(const frnn_kernels *K, const frnn_rstep2 *r2, int n, int nthreads)
{
    projjob pj = {K, *r2, (r2->N + UB - 1) / UB, n, 0};
    if ((double)n * r2->N * r2->K < 1048576.0) nthreads = 1;
    pj.byrows = n >= 32 * nthreads;
    if (nthreads > 1) frnn_team_run(projjob_run, &pj, nthreads);
    else projjob_run(&pj, 0, 1);
}

/* r2 for C (rows N apart) = A (rows K apart) times W^T, W packed wp. */
static frnn_rstep2 plain_product(const float *wp, int N, int K, const frnn_cellp *cp, const float *A, float *C)
{
    frnn_rstep2 r2;
    memset(&r2, 0, sizeof r2);
    r2.cell = FRNN_LSTM;
    r2.K = K;
    r2.N = N;
    r2.wp = wp;
    r2.cp = cp;
    r2.a = A;
    r2.hout = C;
    return r2;
}

void frnn_gemm_packed(const float *wp, int N, int K, const float *A, int M, float *C, int nthreads)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        memset(C, 0, (size_t)M * N * sizeof(float));
        return;
    }
    static const frnn_cellp nocell;   /* a plain store reads no cell parameter */
    const frnn_rstep2 r2 = plain_product(wp, N, K, &nocell, A, C);
    projjob_go(frnn_active_kernels(), &r2, M, nthreads < 1 ? 1 : nthreads);
}

static int gates_of(int cell) { return cell == FRNN_LSTM ? 4 : cell == FRNN_GRU ? 3 : 1; }

/* Whether a float32 layer whose first direction is d0w has everything the
 * fused path needs (two: it takes a second product a step). */
static int f32_fused(const frnn_dir *d0w, int two)
{
    return d0w->w_hh_packed && d0w->w_ih_packed && !d0w->q_hh && (!two || d0w->w2_packed);
}

static int is_fast(const frnn_net *net, const frnn_dir *d)
{
    if (net->clip > 0.0f || d->peep || net->input_forget) return 0;
    if (d->act[0].kind != FRNN_ACT_SIGMOID || d->act[1].kind != FRNN_ACT_TANH) return 0;
    if (net->cell == FRNN_LSTM && d->act[2].kind != FRNN_ACT_TANH) return 0;
    return 1;
}

/* The directions of a bidirectional layer, run side by side: the first half
 * of the team takes the forward direction, the second half the reverse one
 * (one core each on two cores). A team of one runs them in turn. */
typedef struct {
    rjob *j[2];
    int nd;
} rjobs;

static void rjobs_run(void *arg, int tid, int nt)
{
    rjobs *r = (rjobs *)arg;
    if (r->nd == 1) {
        rjob_exec(r->j[0], tid, nt, tid);
    } else if (nt == 1) {
        rjob_exec(r->j[0], 0, 1, 0);
        rjob_exec(r->j[1], 0, 1, 0);
    } else {
        const int h = nt / 2;
        if (tid < h) rjob_exec(r->j[0], tid, h, tid);
        else rjob_exec(r->j[1], tid - h, nt - h, tid);
    }
}

/* a * b * c (+ more) floats, with overflow detection. */
static int mul3(size_t a, size_t b, size_t c, size_t *out)
{
    size_t t;
    if (__builtin_mul_overflow(a, b, &t) || __builtin_mul_overflow(t, c, out)) return -1;
    return 0;
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

static void copy_state(float *dst, const float *src, size_t n)
{
    if (src) memcpy(dst, src, n * sizeof(float));
    else memset(dst, 0, n * sizeof(float));
}

/* Working memory is kept per calling thread and reused by its next call:
 * a fresh multi-megabyte block would be mmapped and page-faulted in on
 * every call. Bounded by the thread's largest call; freed at thread exit or
 * by frnn_release_memory, which needs every thread's buffer: they are
 * listed, and a buffer changes hands (busy, freed) only under ws_mu. */
static pthread_key_t ws_key;
static pthread_once_t ws_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t ws_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct wsbuf {
    char *mem;
    size_t size;   /* bytes mapped at mem (ws_span) */
    int busy;
    struct wsbuf *prev, *next;
} wsbuf;
static wsbuf *ws_list;

#define WS_HUGE ((size_t)2 << 20)

/* Bytes mapped for a workspace of n bytes: whole pages, whole 2 MiB pages
 * from 2 MiB on; 0 if that overflows. */
static size_t ws_span(size_t n)
{
    const size_t unit = n >= WS_HUGE ? WS_HUGE : 4096;
    return n > SIZE_MAX - 2 * WS_HUGE ? 0 : (n + unit - 1) & ~(unit - 1);
}

/* Workspaces are mapped, not malloc'ed: unmapping gives them back to the
 * system at once, where free() may keep them in the heap (glibc carves
 * blocks below its mmap threshold, which rises to 32 MiB as large arrays
 * are freed, from the heap, and trims it only from the top). From 2 MiB on
 * in 2 MiB pages where the kernel offers them: the projection buffer is
 * read one row per 4 KiB page at every step, and small pages would cost a
 * TLB miss per row. */
static char *ws_alloc(size_t span)
{
    if (span == 0) return NULL;
    if (span < WS_HUGE) {
        void *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        return m == MAP_FAILED ? NULL : (char *)m;
    }
    /* 2 MiB aligned: map 2 MiB more and unmap what lies outside */
    char *m = (char *)mmap(NULL, span + WS_HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == (char *)MAP_FAILED) return NULL;
    char *a = (char *)(((uintptr_t)m + WS_HUGE - 1) & ~(uintptr_t)(WS_HUGE - 1));
    if (a > m) munmap(m, (size_t)(a - m));
    if (a + span < m + span + WS_HUGE) munmap(a + span, (size_t)(m + WS_HUGE - a));
#ifdef MADV_HUGEPAGE
    madvise(a, span, MADV_HUGEPAGE);
#endif
    return a;
}

static void ws_unmap(char *mem, size_t span)
{
    if (mem) munmap(mem, span);
}

static void ws_free(void *p)
{
    wsbuf *w = (wsbuf *)p;
    if (!w) return;
    pthread_mutex_lock(&ws_mu);
    if (w->prev) w->prev->next = w->next;
    else ws_list = w->next;
    if (w->next) w->next->prev = w->prev;
    pthread_mutex_unlock(&ws_mu);
    ws_unmap(w->mem, w->size);
    free(w);
}

/* A child forked while another thread held ws_mu would wait for it forever. */
static void ws_lock(void) { pthread_mutex_lock(&ws_mu); }
static void ws_unlock(void) { pthread_mutex_unlock(&ws_mu); }

static void ws_init(void)
{
    pthread_key_create(&ws_key, ws_free);
    pthread_atfork(ws_lock, ws_unlock, ws_unlock);
}

/* At least bytes of working memory, 64-byte aligned (page aligned, in fact),
 * or NULL. Give it back with ws_release(mem, bytes). */
static char *ws_acquire(size_t bytes)
{
    const size_t span = ws_span(bytes);
    if (span == 0) return NULL;
    pthread_once(&ws_once, ws_init);
    wsbuf *w = (wsbuf *)pthread_getspecific(ws_key);
    if (!w) {
        w = (wsbuf *)calloc(1, sizeof(wsbuf));
        if (w && pthread_setspecific(ws_key, w) != 0) { free(w); w = NULL; }
        if (w) {
            pthread_mutex_lock(&ws_mu);
            w->next = ws_list;
            if (ws_list) ws_list->prev = w;
            ws_list = w;
            pthread_mutex_unlock(&ws_mu);
        }
    }
    if (w) {
        /* (busy: a call re-entered from this thread) */
        char *mem = NULL;
        pthread_mutex_lock(&ws_mu);
        if (!w->busy) {
            if (w->size < span) {
                ws_unmap(w->mem, w->size);
                w->mem = ws_alloc(span);
                w->size = w->mem ? span : 0;
            }
            w->busy = w->mem != NULL;
            mem = w->mem;
        }
        pthread_mutex_unlock(&ws_mu);
        if (mem) return mem;
    }
    /* no thread-local slot: a mapping of its own */
    return ws_alloc(span);
}

static void ws_release(char *mem, size_t bytes)
{
    wsbuf *w = (wsbuf *)pthread_getspecific(ws_key);
    if (w) {
        pthread_mutex_lock(&ws_mu);
        const int mine = w->busy && w->mem == mem;
        if (mine) w->busy = 0;
        pthread_mutex_unlock(&ws_mu);
        if (mine) return;
    }
    ws_unmap(mem, ws_span(bytes));
}

size_t frnn_release_memory(void)
{
    size_t freed = 0;
    pthread_once(&ws_once, ws_init);
    pthread_mutex_lock(&ws_mu);
    for (wsbuf *w = ws_list; w; w = w->next)
        if (!w->busy && w->mem) {
            ws_unmap(w->mem, w->size);
            freed += w->size;
            w->mem = NULL;
            w->size = 0;
        }
    pthread_mutex_unlock(&ws_mu);
    return freed;
}

/* Per-core L2 size (bytes), 1 MiB if the system won't say. */
static long l2_bytes(void)
{
    static long cached = 0;
    long v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v == 0) {
#ifdef _SC_LEVEL2_CACHE_SIZE
        v = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        if (v <= 0) v = 1L << 20;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
}

static void init_cellp(frnn_cellp *cp, const frnn_net *net, const frnn_dir *dw)
{
    cp->H = net->hidden_size;
    cp->fast = is_fast(net, dw);
    cp->input_forget = net->input_forget;
    cp->clip = net->clip > 0.0f ? net->clip : 0.0f;
    cp->bias = dw->bias;
    cp->b_hn = dw->b_hn;
    cp->peep = dw->peep;
    memcpy(cp->act, dw->act, sizeof(cp->act));
}

/* Per-direction working buffers (one set, or two when the directions of a
 * bidirectional layer run side by side). */
typedef struct {
    float *xg, *hs, *cs, *hfull, *hg, *rh, *hn2;
    int *claim;
} dirbufs;

/* Initial state of (layer, direction) idx into sorted rows. */
static void load_state(const frnn_call *call, const int *perm, int B, int Ho, int H, int lstm,
                       size_t idx, float *hs, float *cs)
{
    for (int i = 0; i < B; i++) {
        const size_t b = (size_t)perm[i];
        if (call->h0) memcpy(hs + (size_t)i * Ho, call->h0 + (idx * B + b) * Ho, Ho * sizeof(float));
        else memset(hs + (size_t)i * Ho, 0, Ho * sizeof(float));
        if (lstm) {
            if (call->c0) memcpy(cs + (size_t)i * H, call->c0 + (idx * B + b) * H, H * sizeof(float));
            else memset(cs + (size_t)i * H, 0, H * sizeof(float));
        }
    }
}

/* Final state of sorted row i is hb(i) / cs row i; back to batch order. */
static void store_state(const frnn_call *call, const int *perm, const int64_t *lens, int B, int Ho,
                        int H, int lstm, size_t idx, float *const *hb, const float *cs)
{
    for (int i = 0; i < B; i++) {
        const size_t b = (size_t)perm[i];
        const float *h = hb[1] ? hb[lens[i] & 1] : hb[0];
        memcpy(call->h_n + (idx * B + b) * Ho, h + (size_t)i * Ho, Ho * sizeof(float));
        if (lstm && call->c_n)
            memcpy(call->c_n + (idx * B + b) * H, cs + (size_t)i * H, H * sizeof(float));
    }
}

static int g_par_mode = FRNN_PAR_AUTO;
void frnn_set_parallel(int mode)
{
    __atomic_store_n(&g_par_mode, mode >= FRNN_PAR_AUTO && mode <= FRNN_PAR_BATCH ? mode : FRNN_PAR_AUTO,
                     __ATOMIC_RELAXED);
}
int frnn_get_parallel(void) { return __atomic_load_n(&g_par_mode, __ATOMIC_RELAXED); }

static int g_xp_mode = FRNN_XP_AUTO;
void frnn_set_xproj(int mode)
{
    __atomic_store_n(&g_xp_mode, mode >= FRNN_XP_AUTO && mode <= FRNN_XP_STEP ? mode : FRNN_XP_AUTO,
                     __ATOMIC_RELAXED);
}
int frnn_get_xproj(void) { return __atomic_load_n(&g_xp_mode, __ATOMIC_RELAXED); }

/* Bytes of a direction's float32 recurrent weights: W_hh, and W_hr. */
static double rec_bytes(const frnn_net *net)
{
    const double H = net->hidden_size, P = net->proj_size;
    const double G = gates_of(net->cell);
    return (P > 0 ? G * H * P + P * H : G * H * H) * sizeof(float);
}

/* Bytes of a direction's float32 weights in layer l: W_ih and the recurrent ones. */
static double layer_wbytes(const frnn_net *net, int l)
{
    const double in = l == 0 ? net->input_size
                             : (double)net->num_dirs * (net->proj_size > 0 ? net->proj_size : net->hidden_size);
    return (double)gates_of(net->cell) * net->hidden_size * in * sizeof(float) + rec_bytes(net);
}

/* Batch-parallel for layer l's fused path? mode: the parallel mode, read
 * once per call. Batch-parallel when every thread gets a few rows of equal
 * length and either all of W_hh fits a core's L2 or the rows are many (they
 * then reuse each streamed panel enough); else hidden-parallel (each core
 * keeps its slice of W_hh). The fp32 RNN also from 24 rows a thread: with
 * one gate, a hidden split exchanges four times the bytes of h per flop of
 * an LSTM's (measured on 2 threads, H=768-2048: batch-parallel 1-9 % faster
 * at B=48-128, about even at B=32, slower at B=16). */
static int layer_bpar(const frnn_net *net, int l, int qfused, int nd, int B, int nthreads, int equal_lens,
                      int mode)
{
    const int H = net->hidden_size, G = gates_of(net->cell);
    const frnn_dir *d0w = &net->dirs[(size_t)l * net->num_dirs];
    if (nd != 1 || nthreads <= 1) return 0;
    if (mode == FRNN_PAR_BATCH) return 1;
    if (mode != FRNN_PAR_AUTO) return 0;
    const double whh = qfused ? (double)frnn_qpacked_bytes(d0w->q_hh->wtype, G * H, H) : rec_bytes(net);
    return B >= 4 * nthreads && equal_lens &&
           (whh <= 0.75 * (double)l2_bytes() || B >= 128 * nthreads ||
            (!qfused && net->cell == FRNN_RNN && B >= 24 * nthreads));
}

/* Do a layer's steps project their own input (rjob.xstep)? fused: its
 * fp32 fused path runs; mode: the projection mode, read once per call (the
 * workspace is sized by it). */
static int layer_xstep(const frnn_net *net, int fused, int bpar, int B, int nthreads, int equal_lens, int mode)
{
    if (!fused || !equal_lens || (net->cell != FRNN_LSTM && net->cell != FRNN_RNN) || net->proj_size > 0)
        return 0;
    if (mode != FRNN_XP_AUTO) return mode == FRNN_XP_STEP;
    const int per = bpar ? B / nthreads : nthreads == 1 ? B : 0;
    return net->cell == FRNN_LSTM && per >= XSTEP_MIN_ROWS;
}

/* Projection chunks (rjob.tc): all steps' xg at once is T * B * G * H
 * floats, 400 MB for a B=1 H=256 LSTM over 100k steps. In chunks, each
 * half of xg holds XCHUNK_BYTES, or four times the layer's weights if that
 * is more: each chunk's projection streams W_ih through the caches, which
 * then have to fetch W_hh back (measured B=64 H=1024 GRU, 1 thread, halves
 * of 4 MB: 4 % slower than one projection; with this rule it is chunked
 * only from T = 257, in 128 steps). */
#define XCHUNK_BYTES ((size_t)4 << 20)
static int g_xchunk_steps;

void frnn_set_xchunk(int steps)
{
    __atomic_store_n(&g_xchunk_steps, steps, __ATOMIC_RELAXED);
}

/* Steps per projection chunk for a float32 fused layer (f32; not one whose
 * steps project their own input, xstep) with wbytes of weights, or 0 for
 * all steps at once. Chunks need each chunk's times consecutive (forward,
 * or all lengths equal) and its rows of x one run per step (time-major,
 * B = 1, or the xbm layout). frnn_set_xchunk overrides the size (tests). */
static int layer_tc(int f32, int xstep, int T, int B, int D, int equal_lens, int batch_first, size_t pitch,
                    double wbytes)
{
    if (!f32 || xstep || (D == 2 && !equal_lens) || (batch_first && B > 1 && B < XBM_MIN_ROWS)) return 0;
    const int set = __atomic_load_n(&g_xchunk_steps, __ATOMIC_RELAXED);
    if (set < 0) return 0;
    size_t tc = (size_t)set;
    if (!tc) {
        const double half = 4.0 * wbytes > (double)XCHUNK_BYTES ? 4.0 * wbytes : (double)XCHUNK_BYTES;
        const double t = half / ((double)B * (double)pitch * sizeof(float));
        if (t >= (double)T) return 0;
        tc = t < 1.0 ? 1 : (size_t)t;
    }
    return 2 * tc < (size_t)T ? (int)tc : 0;
}

/* reserve: map and touch the working memory the call would use, then stop
 * (frnn_reserve). */
static int forward_run(const frnn_net *net, const frnn_call *call, int reserve)
{
    const int T = call->T, B = call->B, L = net->num_layers, D = net->num_dirs;
    const int H = net->hidden_size, P = net->proj_size, Ho = P > 0 ? P : H;
    const int G = gates_of(net->cell), GH = G * H, W = D * Ho, I = net->input_size;
    const int lstm = net->cell == FRNN_LSTM;
    const int gru_orig = net->cell == FRNN_GRU && !net->linear_before_reset;
    const size_t LD = (size_t)L * D;
    const int nblk = (H + UB - 1) / UB;

    if (T < 0 || B < 0 || L < 1 || (D != 1 && D != 2) || H < 1 || I < 1) return FRNN_EINVAL;
    if (T == 0 || B == 0) {
        if (reserve) return FRNN_OK;
        copy_state(call->h_n, call->h0, LD * B * Ho);
        if (lstm && call->c_n) copy_state(call->c_n, call->c0, LD * B * H);
        return FRNN_OK;
    }

    int nthreads = call->num_threads > 0 ? call->num_threads : frnn_get_num_threads();
    if (nthreads < 1) nthreads = 1;
    if (nthreads > FRNN_MAX_THREADS) nthreads = FRNN_MAX_THREADS;
    /* Tiny steps are not worth a barrier, tiny calls not worth waking the
     * team (a bidirectional layer's directions need no barrier at all). */
    const double step_macs = (double)B * G * H * Ho + (double)B * P * H;
    if (step_macs < 32768.0 && !(D == 2 && B <= 16 && step_macs * T >= 262144.0)) nthreads = 1;
    /* A tiny call costs less on one core than a team hand-off would; from
     * about a batch-1 H=256 LSTM step up, a hot team (back-to-back streaming
     * steps) halves the step by splitting W_ih and W_hh over two L2s. */
    if (step_macs * T * D * L < 2.0e5) nthreads = 1;
    /* The quantized fused path: cells of one product a step. In float32 the
     * original-form GRU and the LSTM with projection are fused too, with a
     * second product a step (rjob.two). */
    const int fused_cell = !(lstm && P > 0) && !gru_orig;
    const int two = !fused_cell;
    /* Small batches of a bidirectional layer: the two directions run side by
     * side, one core each, with no barrier at all, as long as a direction's
     * W_hh fits one core's L2; otherwise splitting each direction's hidden
     * units over the cores keeps every slice in cache and wins. */
    const int side = D == 2 && nthreads >= 2 && B <= 16 && rec_bytes(net) <= 0.75 * (double)l2_bytes();
    const int nsets = side ? 2 : 1;

    /* Each layer's path, decided here once: the workspace depends on it. */
    const int par_mode = __atomic_load_n(&g_par_mode, __ATOMIC_RELAXED);
    const int xp_mode = __atomic_load_n(&g_xp_mode, __ATOMIC_RELAXED);
    int equal_lens = 1;
    for (int b = 1; call->lengths && b < B; b++) equal_lens &= call->lengths[b] == call->lengths[0];
    const size_t rows = (size_t)T * B;
    const size_t pitch_pad = (size_t)nblk * G * UB; /* fused path's xg pitch (>= GH) */
    size_t xg_rows = 0;   /* the most rows of xg a layer needs */
    for (int l = 0; l < L; l++) {
        const frnn_dir *d0w = &net->dirs[(size_t)l * D];
        const int f32 = f32_fused(d0w, two);
        const int bp = f32 && layer_bpar(net, l, 0, nsets, B, nthreads, equal_lens, par_mode);
        const int xs = layer_xstep(net, f32, bp, B, nthreads, equal_lens, xp_mode);
        const int tc = layer_tc(f32, xs, T, B, D, equal_lens, net->batch_first, pitch_pad, layer_wbytes(net, l));
        const size_t need = xs ? 0 : tc ? 2 * (size_t)tc * B : rows;
        if (need > xg_rows) xg_rows = need;
    }

    size_t n_xg = 0, n_buf = 0;
    if (mul3(xg_rows, pitch_pad, 1, &n_xg)) return FRNN_ENOMEM;
    if (L > 1 && mul3(rows, (size_t)W, 2, &n_buf)) return FRNN_ENOMEM;
    const size_t n_hg = (size_t)B * GH, n_h = (size_t)B * H, n_ho = (size_t)B * Ho;
    const int nblk2 = (Ho + UB - 1) / UB;   /* a second product's output blocks */
    const size_t n_h2 = n_h > n_ho ? n_h : n_ho;   /* the fused path's second h buffer */
    const size_t per_set = align16(n_xg) + align16(n_hg) + align16(n_ho) + 3 * align16(n_h) + align16(n_h2) +
                           (size_t)(nblk + nblk2) * CLAIM_PAD;
    size_t total = nsets * per_set + align16(n_buf), bytes;
    if (__builtin_mul_overflow(total, sizeof(float), &bytes)) return FRNN_ENOMEM;
    size_t qbytes = 0;   /* quantized layers: activations quantized per row */
    for (size_t i = 0; i < LD; i++) {
        const frnn_dir *dw = &net->dirs[i];
        const frnn_qmat *qs[3] = {dw->q_ih, dw->q_hh, dw->q_hn};
        for (int q = 0; q < 3; q++)
            if (qs[q]) {
                size_t b = frnn_qscratch_bytes(qs[q], q == 0 ? (int)rows : B);
                if (b > qbytes) qbytes = b;
            }
    }
    qbytes = (qbytes + 63) & ~(size_t)63;
    /* fused quantized path: a quantized copy of h per thread */
    size_t qthr = 0;
    for (size_t i = 0; i < LD; i++)
        if (net->dirs[i].q_hh && net->dirs[i].q_hh->inter) {
            size_t b = frnn_qscratch_bytes(net->dirs[i].q_hh, B);
            if (b > qthr) qthr = b;
        }
    qthr = (qthr + 63) & ~(size_t)63;
    qbytes += qthr * (size_t)nthreads;
    /* int8 batch 1: two block-quantized copies of h per direction set */
    size_t hqb = frnn_hq_bytes(H);
    for (size_t i = 0; i < LD; i++)
        if (net->dirs[i].q_hh && net->dirs[i].q_hh->inter && net->dirs[i].q_hh->wtype == FRNN_W_BF16) {
            /* or bf16: two copies of h in bf16, rows whole lines */
            const size_t b = (size_t)B * frnn_qrow_bytes(net->dirs[i].q_hh);
            if (b > hqb) hqb = b;
        }
    qbytes += 2 * (size_t)nsets * hqb;
    /* the threads' row pointers: each thread's own cache lines, or writing
     * them every step would bounce a shared line between the cores (int8
     * B=1 H=256: the gate math read them back after a miss every step) */
    const size_t pstride = ((size_t)B + 7) & ~(size_t)7;
    size_t extra = (size_t)B * (2 * sizeof(float *) + sizeof(int) + sizeof(int64_t)) +
                   (size_t)nthreads * pstride * 2 * sizeof(float *) + 8 + 64;
    char *mem = NULL;
    /* 64-byte aligned (and every buffer a multiple of 16 floats): full-vector
     * loads and stores never straddle cache lines. */
    size_t ws_bytes;
    if (__builtin_add_overflow(bytes, qbytes + extra + 64, &ws_bytes)) return FRNN_ENOMEM;
    if (!(mem = ws_acquire(ws_bytes))) return FRNN_ENOMEM;
    if (reserve) {
        /* a store per page: each first touch is a page fault (~1.7 us on a
         * guest), which the first call of that size no longer pays */
        for (size_t o = 0; o < ws_bytes; o += 4096) ((volatile char *)mem)[o] = 0;
        ws_release(mem, ws_bytes);
        return FRNN_OK;
    }
    void *qscratch = mem + bytes;
    char *qthr_mem = mem + bytes + (qbytes - qthr * (size_t)nthreads - 2 * (size_t)nsets * hqb);
    char *hq_mem = mem + bytes + (qbytes - 2 * (size_t)nsets * hqb);

    float *ws = (float *)mem;
    float *buf = ws;
    ws += align16(n_buf);
    dirbufs db[2];
    for (int k = 0; k < nsets; k++) {
        db[k].xg = ws;    ws += align16(n_xg);
        db[k].hg = ws;    ws += align16(n_hg);
        db[k].hs = ws;    ws += align16(n_ho);   /* h state, sorted rows */
        db[k].cs = ws;    ws += align16(n_h);    /* c state, sorted rows */
        db[k].hfull = ws; ws += align16(n_h2);   /* GEMM path: LSTM h before projection; fused: 2nd h buffer */
        db[k].rh = ws;    ws += align16(n_h);    /* r * h; fused: also the unprojected h (rjob.ah) */
        db[k].hn2 = ws;   ws += align16(n_h);    /* GEMM path: W_hn (r*h); fused: z_t (rjob.zb) */
        db[k].claim = (int *)ws; ws += (size_t)(nblk + nblk2) * CLAIM_PAD;
    }
    const float **xrow = (const float **)(mem + bytes + qbytes);
    float **orow = (float **)(xrow + B);
    int64_t *lens = (int64_t *)(orow + B);
    int *perm = (int *)(lens + B);
    const float **xrows_t = (const float **)(((uintptr_t)(perm + B) + 63) & ~(uintptr_t)63);
    float **orows_t = (float **)(xrows_t + (size_t)nthreads * pstride);

    /* Order batch entries by decreasing length (stable counting sort). */
    if (call->lengths) {
        int i = 0;
        for (int64_t len = T; len >= 0; len--)
            for (int b = 0; b < B; b++)
                if (call->lengths[b] == len) { perm[i] = b; lens[i] = len; i++; }
        if (i != B) { ws_release(mem, ws_bytes); return FRNN_EINVAL; } /* a length outside 0..T */
    } else {
        for (int b = 0; b < B; b++) { perm[b] = b; lens[b] = T; }
    }
    /* Row of (t, b) in x / out / xg: time-major or batch-first. */
    const size_t st = net->batch_first ? 1 : (size_t)B, sb = net->batch_first ? (size_t)T : 1;

    const frnn_kernels *K = frnn_active_kernels();
    const float *in = call->x;
    int in_w = I;
    for (int l = 0; l < L; l++) {
        float *dst = (l == L - 1) ? call->out : buf + (size_t)(l % 2) * rows * W;
        const frnn_dir *d0w = &net->dirs[(size_t)l * D];
        const int qfused = fused_cell && d0w->q_hh && d0w->q_hh->inter && d0w->q_ih && d0w->q_ih->inter;
        const int fused = qfused || f32_fused(d0w, two);
        if (fused) {
            rjob jobs[2];
            rjobs rj;
            rj.nd = side ? 2 : 1;
            const int bpar = layer_bpar(net, l, qfused, rj.nd, B, nthreads, equal_lens, par_mode);
            const int xstep = layer_xstep(net, !qfused, bpar, B, nthreads, equal_lens, xp_mode);
            for (int d0 = 0; d0 < D; d0 += rj.nd) {
                for (int k = 0; k < rj.nd; k++) {
                    const int d = d0 + k;
                    const frnn_dir *dw = &net->dirs[(size_t)l * D + d];
                    rjob *j = &jobs[k];
                    dirbufs *bf = &db[k];
                    load_state(call, perm, B, Ho, H, lstm, (size_t)l * D + d, bf->hs, bf->cs);
                    init_cellp(&j->cp, net, dw);
                    j->K = K;
                    j->wp = dw->w_hh_packed;
                    j->wp_ih = dw->w_ih_packed;
                    j->x = in;
                    j->in_w = in_w;
                    j->rows = rows;
                    j->q = NULL;
                    j->bpar = bpar;
                    if (qfused) {
                        /* the projection first (threaded by itself), into xg
                         * in the packed layout: W_ih's rows are interleaved too.
                         * Small batches: each thread the columns it will own in
                         * the time loop, so every step's xg is in its own cache
                         * (measured: int8 B=1 H=512 12-14 % faster); large
                         * ones and batch-parallel loops: row bands (5-7 %
                         * faster there). */
                        frnn_qgemm(dw->q_ih, (int)rows, in, in_w, bf->xg, GH, qscratch, nthreads, B < 16 && !bpar);
                        j->rows = 0;
                        j->q = dw->q_hh;
                        j->qscr = qthr_mem;
                        j->qscr_bytes = qthr;
                        j->hgq = bf->hg;
                    }
                    j->hq[0] = j->hq[1] = NULL;
                    j->hbf[0] = j->hbf[1] = NULL;
                    if (qfused && !bpar && dw->q_hh->wtype == FRNN_W_BF16) {
                        j->hbf[0] = hq_mem + (size_t)(2 * k) * hqb;
                        j->hbf[1] = j->hbf[0] + hqb;
                        j->hbf_ld = frnn_qrow_bytes(dw->q_hh);
                        memset(j->hbf[0], 0, 2 * hqb);   /* K's padding: zeros */
                        frnn_qbf16_cols(dw->q_hh, B, bf->hs, H, 0, H, j->hbf[0], j->hbf_ld);
                    }
                    if (qfused && B == 1 && dw->q_hh->hsym) {
                        j->hq[0] = hq_mem + (size_t)(2 * k) * hqb;
                        j->hq[1] = j->hq[0] + hqb;
                        j->hqb = hqb;
                        memset(j->hq[0], 0, 2 * hqb);   /* K's padding: zeros */
                        frnn_hq_quantize(bf->hs, 0, H, H, j->hq[0]);
                    }
                    j->xstep = xstep;
                    if (xstep) j->rows = 0;
                    j->tc = layer_tc(!qfused, xstep, T, B, D, equal_lens, net->batch_first, pitch_pad,
                                     layer_wbytes(net, l));
                    j->tspan = d == 1 ? (int)lens[0] : T;
                    j->pitch = pitch_pad;
                    /* (the quantized projection writes plain rows) */
                    j->xbm = !qfused && B >= XBM_MIN_ROWS;
                    j->pcols = !qfused && !bpar && B < XBM_MIN_ROWS && nthreads > 1 && nthreads <= PCOL_MAXT;
                    memset(j->pu, 0, sizeof j->pu);
                    j->pnext = 0;
                    j->pdone = 0;
                    j->cell = net->cell;
                    j->G = G;
                    j->H = H;
                    j->T = T;
                    j->B = B;
                    j->reverse = d == 1;
                    j->nblk = nblk;
                    /* RNN blocks go to the micro-kernel four at a time. The
                     * quantized kernels want many blocks of 16 outputs per call
                     * (each call sets up tiles / accumulators): about two
                     * groups per thread, of 2 to 8 unit blocks (RNN: 8). */
                    if (qfused) {
                        const int per = nblk / (2 * (nthreads > 0 ? nthreads : 1));
                        j->grp = net->cell == FRNN_RNN ? 8 : per < 2 ? 2 : per > 8 ? 8 : per;
                        /* block-quantized h: a group quantizes whole blocks */
                        if (j->hq[0]) j->grp = (j->grp + FRNN_HBLK / UB - 1) / (FRNN_HBLK / UB) * (FRNN_HBLK / UB);
                    } else {
                        /* batch 1: pairs of blocks, whose gate math runs
                         * interleaved (rstep1) */
                        j->grp = net->cell == FRNN_RNN ? 4 : B == 1 ? 2 : 1;
                    }
                    j->ngrp = (nblk + j->grp - 1) / j->grp;
                    j->Ho = Ho;
                    j->two = two && !qfused;
                    j->wp2 = dw->w2_packed;
                    j->nblk2 = nblk2;
                    j->grp2 = 4;   /* one gate: four blocks a pass, as the RNN */
                    j->ngrp2 = j->two ? (nblk2 + j->grp2 - 1) / j->grp2 : 0;
                    j->zb = bf->hn2;
                    j->ah = bf->rh;
                    j->claim = bf->claim;
                    memset(bf->claim, 0, (size_t)(j->ngrp + j->ngrp2) * CLAIM_PAD * sizeof(int));
                    j->done = 0;
                    j->joined = 0;
                    j->Wd = W;
                    j->d = d;
                    j->st = st;
                    j->sb = sb;
                    j->lens = lens;
                    j->hzero = zero_first_product(call, dw);
                    j->perm = perm;
                    j->xg = bf->xg;
                    j->dst = dst;
                    j->hb[0] = bf->hs;
                    j->hb[1] = bf->hfull;
                    j->c = bf->cs;
                    j->xrows = xrows_t;
                    j->orows = orows_t;
                    j->pstride = pstride;
                    rj.j[k] = j;
                }
                int nt = nthreads;
                if (rj.nd == 1 && !bpar && nt > jobs[0].ngrp) nt = jobs[0].ngrp;
                if (bpar && nt > B) nt = B;
                const int per_job = rj.nd == 2 ? (nt + 1) / 2 : nt;
                for (int k = 0; k < rj.nd; k++) {
                    /* Projection pieces small enough for every thread to get
                     * several (of a projection chunk's rows, with chunks). */
                    const size_t crows = jobs[k].tc ? (size_t)jobs[k].tc * B : rows;
                    size_t pc = (crows + 4 * (size_t)per_job - 1) / (4 * (size_t)per_job);
                    jobs[k].pchunk = pc < 24 ? 24 : pc > 96 ? 96 : pc;
                    if (per_job == 1 && !jobs[k].xbm) {
                        /* one thread: nothing to balance, and every piece reads
                         * all of W_ih; as few even pieces of at most PCOL_ROWS */
                        const size_t nc = (crows + PCOL_ROWS - 1) / PCOL_ROWS;
                        jobs[k].pchunk = nc ? (crows + nc - 1) / nc : 1;
                    }
                }
                if (nt > 1) frnn_team_run(rjobs_run, &rj, nt);
                else rjobs_run(&rj, 0, 1);
                for (int k = 0; k < rj.nd; k++)
                    store_state(call, perm, lens, B, Ho, H, lstm, (size_t)l * D + d0 + k, jobs[k].hb, jobs[k].c);
            }
        } else {
            dirbufs *bf = &db[0];
            float *xg = bf->xg, *hg = bf->hg, *hs = bf->hs, *cs = bf->cs;
            for (int d = 0; d < D; d++) {
                const frnn_dir *dw = &net->dirs[(size_t)l * D + d];
                const int reverse = d == 1;
                /* quantized layers only: every float32 layer is on the fused path */
                if (!dw->q_ih || !dw->q_hh || (gru_orig && !dw->q_hn) || (lstm && P > 0 && !dw->w2_packed)) {
                    ws_release(mem, ws_bytes);
                    return FRNN_EINVAL;
                }
                frnn_qgemm(dw->q_ih, (int)rows, in, in_w, xg, GH, qscratch, nthreads, 0);
                load_state(call, perm, B, Ho, H, lstm, (size_t)l * D + d, hs, cs);
                frnn_cellp cp;
                init_cellp(&cp, net, dw);
                int n = B;
                for (int s = 0; s < T; s++) {
                    while (n > 0 && lens[n - 1] <= s) n--;
                    if (n == 0) break;
                    for (int i = 0; i < n; i++) {
                        const size_t t = reverse ? (size_t)(lens[i] - 1 - s) : (size_t)s;
                        const size_t row = t * st + (size_t)perm[i] * sb;
                        xrow[i] = xg + row * GH;
                        orow[i] = dst + row * W + (size_t)d * Ho;
                    }
                    /* h_{t-1} W_hh^T: all gates (the original-form GRU: r, z only). */
                    const int NG = gru_orig ? 2 * H : GH;
                    frnn_qgemm(dw->q_hh, n, hs, Ho, hg, NG, qscratch, nthreads, 0);
                    if (lstm) {
                        if (P > 0) {
                            K->lstm(&cp, n, xrow, hg, cs, bf->hfull, NULL);
                            frnn_rstep2 r2 = plain_product(dw->w2_packed, P, H, &cp, bf->hfull, hs);
                            r2.orow = orow;
                            projjob_go(K, &r2, n, nthreads);
                        } else {
                            K->lstm(&cp, n, xrow, hg, cs, hs, orow);
                        }
                    } else if (!gru_orig && net->cell == FRNN_GRU) {
                        K->gru_lbr(&cp, n, xrow, hg, hs, orow);
                    } else if (gru_orig) {
                        K->gru_rz(&cp, n, xrow, hg, hs, bf->rh);
                        frnn_qgemm(dw->q_hn, n, bf->rh, H, bf->hn2, H, qscratch, nthreads, 0);
                        K->gru_n(&cp, n, xrow, hg, bf->hn2, hs, orow);
                    } else {
                        K->rnn(&cp, n, xrow, hg, hs, orow);
                    }
                }
                float *hb1[2] = {hs, NULL};
                store_state(call, perm, lens, B, Ho, H, lstm, (size_t)l * D + d, hb1, cs);
            }
        }
        /* Outputs past a sequence's end are zero (they were never written). */
        if (call->lengths) {
            for (int i = 0; i < B; i++)
                for (size_t t = (size_t)lens[i]; t < (size_t)T; t++)
                    memset(dst + (t * st + (size_t)perm[i] * sb) * W, 0, (size_t)W * sizeof(float));
        }
        in = dst;
        in_w = W;
    }
    ws_release(mem, ws_bytes);
    return FRNN_OK;
}

int frnn_forward(const frnn_net *net, const frnn_call *call)
{
    return forward_run(net, call, 0);
}

int frnn_reserve(const frnn_net *net, int T, int B, int num_threads)
{
    frnn_call call;
    memset(&call, 0, sizeof call);
    call.T = T;
    call.B = B;
    call.num_threads = num_threads;
    return forward_run(net, &call, 1);
}
