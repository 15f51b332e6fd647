/* core/pool.c — thread pool with a blocking parallel-for (see pool.h). */
#include "core/pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct vidi_pool {
    int nthreads;               /* workers + the caller */
    pthread_t *threads;
    pthread_mutex_t lock;
    pthread_cond_t work_cv;
    pthread_cond_t done_cv;
    pthread_mutex_t submit;     /* one parallel-for at a time */
    /* the current job */
    vidi_pool_fn fn;
    void *ctx;
    int64_t n, chunk, next;     /* next: first unclaimed index */
    int active;                 /* workers still inside the job */
    uint64_t generation;        /* bumped per job */
    int stop;
};

static __thread int t_in_task;

static void run_chunks(vidi_pool *p, vidi_pool_fn fn, void *ctx, int64_t n, int64_t chunk) {
    for (;;) {
        pthread_mutex_lock(&p->lock);
        int64_t b = p->next;
        p->next = b + chunk;
        pthread_mutex_unlock(&p->lock);
        if (b >= n) break;
        int64_t e = b + chunk < n ? b + chunk : n;
        fn(ctx, b, e);
    }
}

static void *worker_main(void *arg) {
    vidi_pool *p = arg;
    uint64_t seen = 0;
    t_in_task = 1;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->work_cv, &p->lock);
        if (p->stop) break;
        seen = p->generation;
        vidi_pool_fn fn = p->fn;
        void *ctx = p->ctx;
        int64_t n = p->n, chunk = p->chunk;
        pthread_mutex_unlock(&p->lock);
        run_chunks(p, fn, ctx, n, chunk);
        pthread_mutex_lock(&p->lock);
        if (--p->active == 0) pthread_cond_signal(&p->done_cv);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

vidi_pool *vidi_pool_create(int nthreads) {
    if (nthreads <= 0) {
        const char *s = getenv("VIDI_THREADS");
        nthreads = s ? atoi(s) : 0;
        if (nthreads <= 0) nthreads = (int)sysconf(_SC_NPROCESSORS_ONLN);
        if (nthreads <= 0) nthreads = 1;
    }
    if (nthreads > 256) nthreads = 256;
    vidi_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->nthreads = nthreads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->submit, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    if (nthreads > 1) {
        p->threads = calloc((size_t)nthreads - 1, sizeof *p->threads);
        if (!p->threads) goto fail;
        for (int i = 0; i < nthreads - 1; i++) {
            if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
                p->nthreads = i + 1; /* destroy joins the ones that started */
                vidi_pool_destroy(p);
                return NULL;
            }
        }
    }
    return p;
fail:
    free(p);
    return NULL;
}

void vidi_pool_destroy(vidi_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->nthreads - 1; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->submit);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}

int vidi_pool_size(const vidi_pool *p) { return p ? p->nthreads : 1; }

void vidi_pool_for(vidi_pool *p, int64_t n, int64_t grain, vidi_pool_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain <= 0) grain = 1;
    if (!p || p->nthreads <= 1 || t_in_task || n <= grain) {
        fn(ctx, 0, n);
        return;
    }
    int64_t chunk = (n + p->nthreads * 4 - 1) / (p->nthreads * 4);
    if (chunk < grain) chunk = grain;
    pthread_mutex_lock(&p->submit);
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->chunk = chunk;
    p->next = 0;
    p->active = p->nthreads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->lock);

    t_in_task = 1;
    run_chunks(p, fn, ctx, n, chunk);
    t_in_task = 0;

    pthread_mutex_lock(&p->lock);
    while (p->active > 0) pthread_cond_wait(&p->done_cv, &p->lock);
    pthread_mutex_unlock(&p->lock);
    pthread_mutex_unlock(&p->submit);
}

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static vidi_pool *g_pool;
static void make_default(void) { g_pool = vidi_pool_create(0); }

vidi_pool *vidi_pool_default(void) {
    pthread_once(&g_once, make_default);
    return g_pool;
}
