/* One ISA's kernel table. The including file defines FRNN_LEVEL and FN(). */
#include <string.h>
#include "kernels.h"
#include "simd.h"
#include "act_impl.h"
#include "cell_lstm.h"
#include "cell_gru.h"
#include "cell_rnn.h"
#include "recur_impl.h"
