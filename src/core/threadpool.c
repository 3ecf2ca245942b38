/* threadpool.c - spinning-then-sleeping worker pool (see threadpool.h).
 *
 * Protocol: run() publishes fn/arg, sets `pending` to the worker count and bumps
 * `gen` under the mutex (so a worker that is about to sleep cannot miss it),
 * broadcasting only when someone sleeps. A worker runs the task for each new
 * generation it observes and decrements `pending`; run() spins until it is 0.
 */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MN_PAUSE() _mm_pause()
#else
#define MN_PAUSE() ((void)0)
#endif

/* ~50-100 us of spinning before a worker sleeps. */
#define SPIN_ITERS 20000

struct worker {
    struct mn_threadpool *pool;
    pthread_t tid;
    int ith;
};

struct mn_threadpool {
    int n;                 /* threads including the caller */
    struct worker *workers; /* n-1 of them */
    mn_task_fn fn;
    void *arg;
    atomic_uint gen;
    atomic_int pending;
    atomic_int n_sleeping;
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

int mn_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

static void *worker_main(void *p_) {
    struct worker *w = p_;
    mn_threadpool *p = w->pool;
    /* gen is 0 at creation; reading it here instead would miss a task
     * published before this thread got scheduled. */
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen &&
               !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
            if (++spins < SPIN_ITERS) {
                MN_PAUSE();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->n_sleeping, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->n_sleeping, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->stop)) break;
        seen = g;
        p->fn(p->arg, w->ith, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
    return NULL;
}

int mn_threadpool_create(int n_threads, mn_threadpool **out) {
    *out = NULL;
    if (n_threads <= 0) n_threads = mn_cpu_count();
    if (n_threads > 512) return mn_error(MN_EINVAL, "thread count %d is too large (max 512)", n_threads);
    mn_threadpool *p = calloc(1, sizeof *p);
    if (!p) return mn_error(MN_ENOMEM, "out of memory creating thread pool");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            mn_threadpool_free(p);
            return mn_error(MN_ENOMEM, "out of memory creating thread pool");
        }
        for (int i = 1; i < n_threads; i++) {
            struct worker *w = &p->workers[i - 1];
            w->pool = p;
            w->ith = i;
            if (pthread_create(&w->tid, NULL, worker_main, w) != 0) {
                p->n = i; /* join only the started ones */
                mn_threadpool_free(p);
                return mn_error(MN_ENOMEM, "cannot start worker thread %d of %d", i, n_threads);
            }
        }
    }
    *out = p;
    return MN_OK;
}

void mn_threadpool_free(mn_threadpool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        if (p->workers) pthread_join(p->workers[i - 1].tid, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->workers);
    free(p);
}

int mn_threadpool_size(const mn_threadpool *p) { return p->n; }

void mn_threadpool_run(mn_threadpool *p, mn_task_fn fn, void *arg) {
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    if (atomic_load(&p->n_sleeping) > 0) pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->n);
    /* a worker that is late was usually preempted (more runnable threads than
     * cores): after the spin budget, give it the core instead of burning it */
    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        if (++spins < SPIN_ITERS) MN_PAUSE();
        else sched_yield();
    }
}
