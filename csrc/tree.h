/* fastrnn Tree-LSTM core (Tai, Socher & Manning 2015): Child-Sum and binary
 * (N-ary, N = 2) Tree-LSTMs over a forest given by parent indices.
 *
 * All arrays are float32, C-contiguous; weights are PyTorch-style (out, in).
 * A forest is computed level by level, deepest level first: every level of
 * the whole forest is one batch of GEMM rows, the child aggregation and the
 * fused gate math run here, in C.
 */
#ifndef FASTRNN_TREE_H
#define FASTRNN_TREE_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* C (M x N, rows N apart) = A (M x K, rows K apart) times W^T, W (N x K)
 * packed as fastrnn's single-gate blocks (see *_p below), on up to nthreads
 * threads: _core's frnn_gemm_packed (fastrnn's kernels and thread team),
 * handed over by the Python boundary. */
typedef void (*frnn_tree_gemm_fn)(const float *wp, int N, int K, const float *A, int M, float *C, int nthreads);

enum { FRNN_TREE_CHILDSUM = 0, FRNN_TREE_BINARY = 1 };

/* Weights (pointers stay owned by the caller).
 *
 * Child-Sum (kind 0), H hidden, I input:
 *   w_x   (4H, I)  [ioux.weight (3H, I); fx.weight (H, I)]
 *   b_x   (4H)     [ioux.bias + iouh.bias; fx.bias + fh.bias]
 *   u     (4H, H)  [iouh.weight (3H, H); fh.weight (H, H)]
 *   b_f2  unused (NULL)
 * Binary (kind 1):
 *   w_x   (4H, I)  [ioux.weight (3H, I); fx.weight (H, I)]
 *   b_x   (4H)     [ioux.bias + iouh.bias; fx.bias]
 *   u     (5H, 2H) [iouh.weight (3H, 2H); fh.weight (2H, 2H)] acting on [h_left; h_right]
 *   b_f2  (2H)     fh.bias (left forget gate's, then right's)
 * Gate blocks i, o, u (input, output, candidate). */
typedef struct {
    int kind;
    int input_size;
    int hidden_size;
    const float *w_x;
    const float *b_x;
    const float *u;
    const float *b_f2;
    /* (4H child-sum: iou and the zero child's forget gate; 5H binary) the
     * recurrent pre-activations of a leaf, u times zero children: 0, or NaN
     * in a row of u holding an inf or NaN (0 * inf is NaN, as in the
     * reference); frnn_tree_leaf_g. NULL: zeros. */
    const float *g_leaf;
    /* w_x and u packed for frnn_tree_gemm_fn (frnn_pack_whh with G = 1:
     * [ceil(N / 16)][K][16], zero-padded): w_x_p (N = 4H, K = I); child-sum
     * u_p of u's iou rows (3H, H) and u_f_p of its forget rows (H, H);
     * binary u_p of all of u (5H, 2H), u_f_p unused */
    const float *w_x_p;
    const float *u_p;
    const float *u_f_p;
} frnn_tree_net;

/* net->g_leaf for the other fields of net, into g (4H or 5H floats). */
void frnn_tree_leaf_g(const frnn_tree_net *net, float *g);

enum {
    FRNN_TREE_OK = 0,
    FRNN_TREE_ENOMEM = 1,
    FRNN_TREE_EINVAL = 2,     /* bad sizes */
    FRNN_TREE_EPARENT = 3,    /* parent index out of range (err_node: the node) */
    FRNN_TREE_ECYCLE = 4,     /* a cycle through err_node */
    FRNN_TREE_ECHILDREN = 5   /* binary tree: err_node has more than two children */
};

/* Structure only: validates `parent` (N entries, -1 for roots) and writes
 * each node's depth (roots 0) to `depth` (may be NULL). Returns an error code
 * (err_node set on errors) or FRNN_TREE_OK; *max_depth gets the largest
 * depth (-1 for an empty forest). */
int frnn_tree_depths(int64_t N, const int64_t *parent, int64_t *depth, int64_t *max_depth,
                     int64_t *err_node);

/* Runs the Tree-LSTM over the forest: x (N, I), parent (N); writes h and c
 * (N, H) for every node, in node order. Thread-safe (all working memory is
 * per call); returns an error code as above. */
int frnn_tree_forward(const frnn_tree_net *net, int64_t N, const float *x, const int64_t *parent,
                      float *h, float *c, frnn_tree_gemm_fn gemm, int nthreads, int64_t *err_node);

#ifdef __cplusplus
}
#endif
#endif
