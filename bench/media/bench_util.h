/* bench/media/bench_util.h — clock and median for the media benchmark
 * programs (header-only: each program is one file plus this). */
#ifndef VIDI_BENCH_MEDIA_BENCH_UTIL_H
#define VIDI_BENCH_MEDIA_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_MAX_RUNS 64

static inline double bench_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n values (sorts a copy). */
static inline double bench_median(const double *v, int n) {
    double s[BENCH_MAX_RUNS];
    for (int i = 0; i < n; i++) s[i] = v[i];
    qsort(s, (size_t)n, sizeof *s, bench_cmp_double);
    return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* Prints "median_ms":M,"runs_ms":[...] (no braces) for a JSON line. */
static inline void bench_print_runs(const double *ms, int n) {
    printf("\"median_ms\":%.3f,\"runs_ms\":[", bench_median(ms, n));
    for (int i = 0; i < n; i++) printf("%s%.3f", i ? "," : "", ms[i]);
    printf("]");
}

#endif
