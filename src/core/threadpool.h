/* threadpool.h - a fixed pool of workers that run one data-parallel task at a time.
 *
 * mn_threadpool_run(pool, fn, arg) calls fn(arg, ith, nth) for ith = 0..nth-1,
 * with the caller itself running ith = 0, and returns when all have finished.
 * The forward pass dispatches ~5 tasks per layer, so dispatch latency matters:
 * idle workers spin on an atomic generation counter for a short while before
 * sleeping on a condition variable, which makes back-to-back tasks cost about a
 * microsecond while a pool left idle costs no CPU.
 */
#ifndef MN_THREADPOOL_H
#define MN_THREADPOOL_H

typedef struct mn_threadpool mn_threadpool;
typedef void (*mn_task_fn)(void *arg, int ith, int nth);

/* n_threads counts the calling thread; n_threads <= 0 means all online cores. */
int mn_threadpool_create(int n_threads, mn_threadpool **out);
void mn_threadpool_free(mn_threadpool *p);
int mn_threadpool_size(const mn_threadpool *p);
/* Not reentrant: one run at a time per pool. */
void mn_threadpool_run(mn_threadpool *p, mn_task_fn fn, void *arg);

/* Number of online cores (at least 1). */
int mn_cpu_count(void);

/* Splits [0, n) into nth near-equal contiguous parts; part ith is [*lo, *hi).
 * `align` rounds part boundaries to a multiple (e.g. a gemm tile height). */
static inline void mn_split(long n, int ith, int nth, long align, long *lo, long *hi) {
    long chunks = (n + align - 1) / align;
    long per = chunks / nth, rem = chunks % nth;
    long c0 = ith * per + (ith < rem ? ith : rem);
    long c1 = c0 + per + (ith < rem ? 1 : 0);
    *lo = c0 * align < n ? c0 * align : n;
    *hi = c1 * align < n ? c1 * align : n;
}

#endif
