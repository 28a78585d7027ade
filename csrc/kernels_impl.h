/* One ISA's kernel table. The including file defines FRNN_LEVEL and FN(). */
#include <string.h>
#include "kernels.h"
#include "simd.h"
#include "act_impl.h"
#include "cell_lstm.h"
#include "cell_gru.h"
#include "cell_rnn.h"
#include "recur_impl.h"

/* Benchmarks: reads a (n floats) reps times and returns the sum, the way
 * the batch-1 product reads W_hh: wide loads, eight independent chains, so
 * neither FMA latency nor the loop limits the rate (numpy's max reduction
 * and OpenBLAS's sgemv read an L2-resident array at half the rate the
 * cache delivers to this loop). zigzag: odd passes walk a backwards, as
 * the time loop walks W_hh on odd steps (the lines read last come first). */
static float FN(read_probe)(const float *a, size_t n, size_t reps, int zigzag)
{
    V s[8];
    for (int q = 0; q < 8; q++) s[q] = vset1(0.0f);
    const size_t n8 = n / (8 * VL) * (8 * VL);
    float t = 0.0f;
    for (size_t r = 0; r < reps; r++) {
        if (zigzag && (r & 1)) {
            for (size_t i = n; i > n8; i--) t += a[i - 1];
            for (size_t i = n8; i > 0;) {
                i -= 8 * VL;
#pragma GCC unroll 8
                for (int q = 7; q >= 0; q--) s[q] = vadd(s[q], vload(a + i + (size_t)q * VL));
            }
        } else {
            for (size_t i = 0; i < n8; i += 8 * VL) {
#pragma GCC unroll 8
                for (int q = 0; q < 8; q++) s[q] = vadd(s[q], vload(a + i + (size_t)q * VL));
            }
            for (size_t i = n8; i < n; i++) t += a[i];
        }
        __asm__ volatile("" ::: "memory");   /* every pass reads a again */
    }
    float out[VL];
    for (int q = 1; q < 8; q++) s[0] = vadd(s[0], s[q]);
    vstore(out, s[0]);
    for (int l = 0; l < VL; l++) t += out[l];
    return t;
}
