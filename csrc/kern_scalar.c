/* Portable scalar kernels: the fallback and the reference path. */
#define FRNN_LEVEL 0
#define FN(name) name##_scalar
#include "kernels_impl.h"

const frnn_kernels frnn_kernels_scalar = {
    lstm_rows_scalar, gru_lbr_rows_scalar, gru_rz_rows_scalar,
    gru_n_rows_scalar, rnn_rows_scalar, apply_act_scalar, rstep_scalar, rstep2_scalar, proj_scalar, qepi_scalar, read_probe_scalar,
};
