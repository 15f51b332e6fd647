/* tests/test_util.h — a tiny assertion harness shared by every test program.
 *
 * CHECK(cond, ...) records a failure with file:line and a message and goes
 * on; REQUIRE stops the current test function. test_main runs the cases and
 * prints "N passed, N failed" (exit 1 on any failure, 77 = skipped).
 */
#ifndef VIDI_TEST_UTIL_H
#define VIDI_TEST_UTIL_H

#include <stdio.h>

extern int test_failures;
extern int test_checks;

void test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define CHECK(cond, ...)                                                        \
    do {                                                                       \
        test_checks++;                                                         \
        if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__);               \
    } while (0)

#define REQUIRE(cond, ...)                                                      \
    do {                                                                       \
        test_checks++;                                                         \
        if (!(cond)) {                                                         \
            test_fail(__FILE__, __LINE__, __VA_ARGS__);                        \
            return;                                                            \
        }                                                                      \
    } while (0)

typedef struct test_case {
    const char *name;
    void (*fn)(void);
} test_case;

/* Runs the cases whose name contains argv[1] (all when absent); a filter
 * that matches no case is a failure, so a misspelt ctest cannot pass. */
int test_main(int argc, char **argv, const test_case *cases, int n);

/* tests/data: $VIDI_TEST_DATA when set (a build run on another host), else
 * the source tree's folder compiled in. */
const char *test_data_dir(void);
/* Path under tests/data: test_data_path("models/x") -> static buffer. */
const char *test_data_path(const char *rel);

/* A private scratch folder (under $TMPDIR, else /tmp), made on first use;
 * test_main removes it, and everything below it, when the cases are done.
 * Returns NULL (after printing why) when it cannot be made. */
const char *test_tmpdir(void);
/* test_tmpdir()/rel in one of 8 rotating static buffers. */
const char *test_tmp_path(const char *rel);

/* Fill with uniform values in [lo, hi) from a fixed-seed generator. */
void test_fill_uniform(float *x, long n, float lo, float hi, unsigned long long seed);
/* Largest |a - b| over n values. */
double test_max_abs_diff(const float *a, const float *b, long n);

#endif
