/* tests/test_util.c — see test_util.h. */
#include "test_util.h"

#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int test_failures;
int test_checks;

void test_fail(const char *file, int line, const char *fmt, ...) {
    test_failures++;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static char g_tmpdir[512];

const char *test_tmpdir(void) {
    if (!g_tmpdir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(g_tmpdir, sizeof g_tmpdir, "%s/vidi-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(g_tmpdir)) {
            perror("test_tmpdir: mkdtemp");
            g_tmpdir[0] = '\0';
            return NULL;
        }
    }
    return g_tmpdir;
}

const char *test_tmp_path(const char *rel) {
    static char buf[8][1024];
    static int k;
    k = (k + 1) & 7;
    const char *dir = test_tmpdir();
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir ? dir : "/nonexistent", rel);
    return buf[k];
}

/* Removes dir and what is below it; links are removed, never followed. */
static void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        char path[1024];
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            struct stat st;
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
                rm_tree(path);
            else
                unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

int test_main(int argc, char **argv, const test_case *cases, int n) {
    int passed = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        if (argc > 1 && !strstr(cases[i].name, argv[1])) continue;
        int before = test_failures;
        cases[i].fn();
        if (test_failures == before) {
            passed++;
            printf("ok   %s\n", cases[i].name);
        } else {
            failed++;
            printf("FAIL %s\n", cases[i].name);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    if (g_tmpdir[0]) rm_tree(g_tmpdir);
    if (argc > 1 && passed + failed == 0) {
        printf("no test case matches '%s'\n", argv[1]);
        return 1;
    }
    return failed ? 1 : 0;
}

const char *test_data_dir(void) {
    const char *env = getenv("VIDI_TEST_DATA"); /* a build shipped to another host */
    return env && *env ? env : VIDI_TEST_DATA;
}

const char *test_data_path(const char *rel) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", test_data_dir(), rel);
    return buf;
}

void test_fill_uniform(float *x, long n, float lo, float hi, unsigned long long seed) {
    unsigned long long s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (long i = 0; i < n; i++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        unsigned long long r = s * 0x2545F4914F6CDD1Dull;
        x[i] = lo + (hi - lo) * (float)((r >> 40) * (1.0 / 16777216.0));
    }
}

double test_max_abs_diff(const float *a, const float *b, long n) {
    double m = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d)) return INFINITY;
        if (d > m) m = d;
    }
    return m;
}
