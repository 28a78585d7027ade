/* Runtime choice of the kernel ISA. The best path the CPU (and OS) supports
 * is picked once; FASTRNN_ISA=scalar|avx2|avx512 forces one, and
 * frnn_set_isa() lets tests exercise every path in one process. */
#include <stdlib.h>
#include <string.h>
#include "kernels.h"

static int g_isa = -1;

int frnn_isa_supported(int isa)
{
    switch (isa) {
    case FRNN_ISA_SCALAR: return 1;
#if defined(FRNN_HAVE_X86) && (defined(__GNUC__) || defined(__clang__))
    case FRNN_ISA_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case FRNN_ISA_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
#endif
    default: return 0;
    }
}

const char *frnn_isa_name(int isa)
{
    switch (isa) {
    case FRNN_ISA_SCALAR: return "scalar";
    case FRNN_ISA_AVX2: return "avx2";
    case FRNN_ISA_AVX512: return "avx512";
    default: return "unknown";
    }
}

static int pick_isa(void)
{
    const char *env = getenv("FASTRNN_ISA");
    if (env && *env) {
        for (int isa = FRNN_ISA_SCALAR; isa <= FRNN_ISA_AVX512; isa++)
            if (strcmp(env, frnn_isa_name(isa)) == 0 && frnn_isa_supported(isa)) return isa;
    }
    for (int isa = FRNN_ISA_AVX512; isa > FRNN_ISA_SCALAR; isa--)
        if (frnn_isa_supported(isa)) return isa;
    return FRNN_ISA_SCALAR;
}

int frnn_get_isa(void)
{
    int isa = __atomic_load_n(&g_isa, __ATOMIC_ACQUIRE);
    if (isa < 0) {
        isa = pick_isa();
        __atomic_store_n(&g_isa, isa, __ATOMIC_RELEASE);
    }
    return isa;
}

int frnn_set_isa(int isa)
{
    if (isa < FRNN_ISA_SCALAR || isa > FRNN_ISA_AVX512 || !frnn_isa_supported(isa)) return -1;
    __atomic_store_n(&g_isa, isa, __ATOMIC_RELEASE);
    return 0;
}

const frnn_kernels *frnn_active_kernels(void)
{
    switch (frnn_get_isa()) {
#ifdef FRNN_HAVE_X86
    case FRNN_ISA_AVX512: return &frnn_kernels_avx512;
    case FRNN_ISA_AVX2: return &frnn_kernels_avx2;
#endif
    default: return &frnn_kernels_scalar;
    }
}

void frnn_apply_act(const frnn_act *a, float *v, int n)
{
    frnn_active_kernels()->act(a, v, n);
}

float frnn_read_probe(const float *a, size_t n, size_t reps, int zigzag)
{
    return frnn_active_kernels()->read_probe(a, n, reps, zigzag);
}
