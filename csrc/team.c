/* Persistent thread team. Workers are created once, on first use, and then
 * wait for jobs: spinning briefly (a step's work is microseconds), then
 * sleeping on a condition variable so an idle process costs nothing. One job
 * at a time: a concurrent caller finds the team busy and runs its job on its
 * own thread instead of queueing, which keeps Python threads independent. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include "team.h"
#include "fastrnn.h"


#define SPIN_ITERS 2000

static pthread_mutex_t g_busy = PTHREAD_MUTEX_INITIALIZER;   /* held by the running job */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;   /* guards sleeping */
static pthread_cond_t g_wake = PTHREAD_COND_INITIALIZER;
static int g_nworkers = 0;        /* started workers */
static int g_num_threads = 1;     /* default team size, set from Python */
static unsigned g_gen = 0;        /* job generation */
static int g_sleepers = 0;
static frnn_job_fn g_fn;
static void *g_arg;
static int g_n;
static int g_pending;
/* Per worker, the last job generation it took or was excused from: a worker
 * takes job g by moving its ticket from g - 1 to g, and the caller, once its
 * own share is done, excuses every worker that has not started yet the same
 * way and runs their shares itself. A worker that wakes late (a futex wake
 * on an idle virtual CPU took about 1 ms here) then never holds a call up.
 * Tickets only move forwards, so a worker preempted between reading g_gen
 * and taking a ticket cannot take a job that is over. */
static unsigned g_ticket[FRNN_MAX_THREADS];
/* tests: workers take no job at all, so every share runs on the caller */
static int g_test_absent;

/* The job generation each worker was created at: a worker starts from it, so
 * that one created between jobs never takes the last finished job, or the
 * next one half-published, for its own. */
static unsigned g_start_gen[FRNN_MAX_THREADS];

static void *worker(void *p)
{
    const int tid = (int)(long)p;
    unsigned seen = g_start_gen[tid];
    for (;;) {
        unsigned gen;
        int spins = 0;
        while ((gen = __atomic_load_n(&g_gen, __ATOMIC_ACQUIRE)) == seen) {
            if (++spins < SPIN_ITERS) { cpu_relax(); continue; }
            pthread_mutex_lock(&g_lock);
            g_sleepers++;
            while (__atomic_load_n(&g_gen, __ATOMIC_ACQUIRE) == seen) pthread_cond_wait(&g_wake, &g_lock);
            g_sleepers--;
            pthread_mutex_unlock(&g_lock);
            spins = 0;
        }
        seen = gen;
        unsigned expect = gen - 1;
        if (!__atomic_load_n(&g_test_absent, __ATOMIC_RELAXED) &&
            __atomic_compare_exchange_n(&g_ticket[tid], &expect, gen, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            g_fn(g_arg, tid, g_n);
            __atomic_sub_fetch(&g_pending, 1, __ATOMIC_ACQ_REL);
        }
    }
    return NULL;
}

/* In a child forked from a process whose team has started (multiprocessing's
 * default on Linux), the workers are not there: without this the child's
 * first threaded call would wait for them forever. Start over instead, new
 * workers on demand (each from the current generation, see g_start_gen). */
static void team_after_fork_child(void)
{
    pthread_mutex_init(&g_busy, NULL);
    pthread_mutex_init(&g_lock, NULL);
    pthread_cond_init(&g_wake, NULL);
    g_nworkers = 0;
    g_sleepers = 0;
    g_pending = 0;
}

static pthread_once_t g_fork_once = PTHREAD_ONCE_INIT;
static void register_fork_handler(void) { pthread_atfork(NULL, NULL, team_after_fork_child); }

static int ensure_workers(int n)
{
    /* caller holds g_busy */
    if (g_nworkers < n - 1) pthread_once(&g_fork_once, register_fork_handler);
    while (g_nworkers < n - 1 && g_nworkers < FRNN_MAX_THREADS - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        g_start_gen[g_nworkers + 1] = __atomic_load_n(&g_gen, __ATOMIC_ACQUIRE);
        __atomic_store_n(&g_ticket[g_nworkers + 1], g_start_gen[g_nworkers + 1], __ATOMIC_RELEASE);
        int rc = pthread_create(&th, &attr, worker, (void *)(long)(g_nworkers + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        g_nworkers++;
    }
    return g_nworkers + 1;
}

void frnn_team_run(frnn_job_fn fn, void *arg, int n)
{
    if (n > FRNN_MAX_THREADS) n = FRNN_MAX_THREADS;
    if (n <= 1 || pthread_mutex_trylock(&g_busy) != 0) {
        fn(arg, 0, 1);
        return;
    }
    int avail = ensure_workers(n);
    if (n > avail) n = avail;
    if (n <= 1) {
        pthread_mutex_unlock(&g_busy);
        fn(arg, 0, 1);
        return;
    }
    g_fn = fn;
    g_arg = arg;
    g_n = n;
    __atomic_store_n(&g_pending, n - 1, __ATOMIC_RELEASE);
    const unsigned gen = __atomic_load_n(&g_gen, __ATOMIC_RELAXED) + 1;
    /* workers beyond this job's n sit it out */
    for (int t = n; t <= g_nworkers; t++) __atomic_store_n(&g_ticket[t], gen, __ATOMIC_RELEASE);
    pthread_mutex_lock(&g_lock);
    __atomic_store_n(&g_gen, gen, __ATOMIC_RELEASE);
    if (g_sleepers) pthread_cond_broadcast(&g_wake);
    pthread_mutex_unlock(&g_lock);
    fn(arg, 0, n);
    /* Excuse the workers that have not started, and run their shares here
     * (every job's shares may run in any order on any thread: its threads
     * only ever wait for work that a running thread has claimed). */
    for (int t = 1; t < n; t++) {
        unsigned expect = gen - 1;
        if (__atomic_compare_exchange_n(&g_ticket[t], &expect, gen, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            __atomic_sub_fetch(&g_pending, 1, __ATOMIC_ACQ_REL);
            fn(arg, t, n);
        }
    }
    int spins = 0;
    while (__atomic_load_n(&g_pending, __ATOMIC_ACQUIRE) > 0) {
        if (++spins < SPIN_ITERS) cpu_relax();
        else sched_yield();
    }
    pthread_mutex_unlock(&g_busy);
}

void frnn_team_start(int n)
{
    if (n > FRNN_MAX_THREADS) n = FRNN_MAX_THREADS;
    /* busy: a long call of another thread is running; the first call that
     * finds the team free starts the workers instead of this (building a
     * layer must not wait for an unrelated call) */
    if (pthread_mutex_trylock(&g_busy) != 0) return;
    ensure_workers(n);
    pthread_mutex_unlock(&g_busy);
}

void frnn_set_num_threads(int n)
{
    if (n < 1) n = 1;
    if (n > FRNN_MAX_THREADS) n = FRNN_MAX_THREADS;
    __atomic_store_n(&g_num_threads, n, __ATOMIC_RELAXED);
}

int frnn_get_num_threads(void) { return __atomic_load_n(&g_num_threads, __ATOMIC_RELAXED); }

void frnn_team_test_absent(int on) { __atomic_store_n(&g_test_absent, on, __ATOMIC_RELAXED); }
