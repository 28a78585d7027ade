/* A persistent team of worker threads for the per-step parallel loops. */
#ifndef FRNN_TEAM_H
#define FRNN_TEAM_H

/* Spin-wait hint. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

typedef void (*frnn_job_fn)(void *arg, int tid, int nthreads);

/* Runs fn(arg, tid, n) on n threads, the caller being tid 0, and returns
 * when all are done. If the team is busy (another call holds it) or n <= 1,
 * fn runs on the caller alone with n = 1: never blocks, never nests. */
void frnn_team_run(frnn_job_fn fn, void *arg, int n);

/* Barrier for the n threads of one job (n as passed to the job function,
 * which may be less than asked for). */
typedef struct {
    int count;
    int sense;
} frnn_barrier;

void frnn_barrier_init(frnn_barrier *b);
/* *local must start at 0 in every thread. */
void frnn_barrier_wait(frnn_barrier *b, int n, int *local);

/* Starts the workers of an n-thread team now, so no call pays for it. */
void frnn_team_start(int n);

void frnn_set_num_threads(int n);
int frnn_get_num_threads(void);

#endif
