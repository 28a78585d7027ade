/* AVX-512F kernels, compiled for that ISA only in this file and chosen at
 * run time (dispatch.c). */
#if defined(__x86_64__) || defined(_M_X64)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512f,avx2,fma")
#endif
#define FRNN_LEVEL 2
#define FN(name) name##_avx512
#include "kernels_impl.h"

const frnn_kernels frnn_kernels_avx512 = {
    lstm_rows_avx512, gru_lbr_rows_avx512, gru_rz_rows_avx512,
    gru_n_rows_avx512, rnn_rows_avx512, apply_act_avx512, rstep_avx512, rstep2_avx512, proj_avx512, qepi_avx512, read_probe_avx512,
};
#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
typedef int frnn_no_avx512;
#endif
