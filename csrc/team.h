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
 * fn runs on the caller alone with n = 1: never blocks, never nests. The
 * shares of workers that have not started when the caller's own is done run
 * on the caller, after it: a job's threads may only wait for each other for
 * work some running thread has claimed (no barriers). */
void frnn_team_run(frnn_job_fn fn, void *arg, int n);

/* Starts the workers of an n-thread team now, so no call pays for it. */
void frnn_team_start(int n);

void frnn_set_num_threads(int n);
int frnn_get_num_threads(void);

#endif
