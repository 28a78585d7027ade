/* AVX2 + FMA kernels, compiled for that ISA only in this file and chosen at
 * run time (dispatch.c), so the default build stays portable. */
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx2,fma")
#endif
#define FRNN_LEVEL 1
#define FN(name) name##_avx2
#include "kernels_impl.h"

const frnn_kernels frnn_kernels_avx2 = {
    lstm_rows_avx2, gru_lbr_rows_avx2, gru_rz_rows_avx2,
    gru_n_rows_avx2, rnn_rows_avx2, apply_act_avx2, rstep_avx2, rstep2_avx2, proj_avx2, qepi_avx2, read_probe_avx2,
};
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
typedef int frnn_no_avx2;
#endif
