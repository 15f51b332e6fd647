/* tests/gpu/test_cuda_ipc.c — the CUDA backend's memory shared between
 * processes (ipc_alloc / ipc_open / ipc_close / copy, kernels/ops.h), the
 * path that vision rows and KV take between workers on one host.
 *
 * The parent allocates an export buffer, writes a pattern at an offset and
 * starts a child (this program again, by exec: CUDA does not survive a
 * fork) with the handle in hex. The child maps it on its device, copies
 * the range into its own memory with `copy`, checks it, and writes its own
 * pattern back through the mapping; the parent then finds that pattern. On
 * a host with two devices the child also runs on device 1 (a peer copy).
 * Opening this process's own handle is an error, not a crash.
 * Exit 77 without a CUDA device.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kernels/ops.h"
#include "test_util.h"

#define OFFSET 4096u
#define N 65536u /* floats */

static const char *g_self;

static float pat(unsigned i, unsigned seed) { return (float)((i * 2654435761u + seed) % 1000003u) * 0.5f; }

/* The child: argv = self --child DEVICE HEX */
static int child(int device, const char *hex) {
    vidi_err err = {0};
    vidi_backend *be = vidi_backend_cuda_create(device, &err);
    if (!be) {
        fprintf(stderr, "child: no device %d: %s\n", device, err.msg);
        return 2;
    }
    uint8_t h[64];
    for (int i = 0; i < 64; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return 3;
        h[i] = (uint8_t)v;
    }
    void *base = NULL, *mine = be->ops->buf_alloc(be, N * sizeof(float));
    float *host = malloc(N * sizeof(float));
    int bad = 0;
    size_t size = 0;
    if (!mine || !host || be->ops->ipc_open(be, h, &base, &size, &err) != VIDI_OK) {
        fprintf(stderr, "child: ipc_open: %s\n", err.msg);
        return 4;
    }
    if (size < OFFSET + N * sizeof(float)) {
        fprintf(stderr, "child: the mapping has %zu bytes\n", size);
        return 8;
    }
    if (be->ops->copy(be, mine, (char *)base + OFFSET, N * sizeof(float), &err) ||
        be->ops->copy_to_host(be, host, mine, N * sizeof(float), &err)) {
        fprintf(stderr, "child: copy: %s\n", err.msg);
        return 5;
    }
    for (unsigned i = 0; i < N; i++) bad += host[i] != pat(i, 1);
    for (unsigned i = 0; i < N; i++) host[i] = pat(i, 2);
    if (be->ops->copy_to_device(be, mine, host, N * sizeof(float), &err) ||
        be->ops->copy(be, (char *)base + OFFSET, mine, N * sizeof(float), &err) ||
        be->ops->synchronize(be, &err)) {
        fprintf(stderr, "child: write back: %s\n", err.msg);
        return 6;
    }
    be->ops->ipc_close(be, base);
    be->ops->buf_free(be, mine);
    be->ops->destroy(be);
    free(host);
    if (bad) fprintf(stderr, "child: %d of %u values differ\n", bad, N);
    return bad ? 7 : 0;
}

static vidi_backend *g_be;

static int run_child(int device, const uint8_t h[64]) {
    char hex[129];
    for (int i = 0; i < 64; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
    char dev[16];
    snprintf(dev, sizeof dev, "%d", device);
    pid_t pid = fork();
    if (pid == 0) {
        execl(g_self, g_self, "--child", dev, hex, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void round_trip(int device) {
    vidi_err err = {0};
    vidi_backend *be = g_be;
    uint8_t h[64];
    size_t bytes = OFFSET + N * sizeof(float) + 4096;
    void *buf = be->ops->ipc_alloc(be, bytes, h, &err);
    REQUIRE(buf, "ipc_alloc: %s", err.msg);
    float *host = malloc(N * sizeof(float));
    REQUIRE(host, "out of memory");
    for (unsigned i = 0; i < N; i++) host[i] = pat(i, 1);
    CHECK(be->ops->copy_to_device(be, (char *)buf + OFFSET, host, N * sizeof(float), &err) == VIDI_OK &&
              be->ops->synchronize(be, &err) == VIDI_OK,
          "fill: %s", err.msg);
    int rc = run_child(device, h);
    CHECK(rc == 0, "the child on device %d exited %d", device, rc);
    memset(host, 0, N * sizeof(float));
    CHECK(be->ops->copy_to_host(be, host, (char *)buf + OFFSET, N * sizeof(float), &err) == VIDI_OK, "read: %s",
          err.msg);
    int bad = 0;
    for (unsigned i = 0; i < N; i++) bad += host[i] != pat(i, 2);
    CHECK(!bad, "device %d: %d of %u values the child wrote are not there", device, bad, N);
    be->ops->ipc_free(be, buf);
    free(host);
}

static void test_round_trip_same_device(void) { round_trip(0); }

static void test_round_trip_other_device(void) {
    vidi_err err = {0};
    vidi_backend *b1 = vidi_backend_cuda_create(1, &err);
    if (!b1) {
        printf("     one device: the peer case is not run (%s)\n", err.msg);
        return;
    }
    b1->ops->destroy(b1);
    round_trip(1);
}

static void test_own_handle_is_an_error(void) {
    vidi_err err = {0};
    uint8_t h[64];
    void *buf = g_be->ops->ipc_alloc(g_be, 1 << 20, h, &err);
    REQUIRE(buf, "ipc_alloc: %s", err.msg);
    void *base = NULL;
    size_t size = 0;
    vidi_status st = g_be->ops->ipc_open(g_be, h, &base, &size, &err);
    CHECK(st != VIDI_OK && err.msg[0], "opening our own handle: status %d", (int)st);
    uint8_t junk[64];
    memset(junk, 0x5A, sizeof junk);
    st = g_be->ops->ipc_open(g_be, junk, &base, &size, &err);
    CHECK(st != VIDI_OK && err.msg[0], "opening a junk handle: status %d", (int)st);
    g_be->ops->ipc_free(g_be, buf);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--child")) return child(atoi(argv[2]), argv[3]);
    g_self = argv[0];
    vidi_err err = {0};
    g_be = vidi_backend_cuda_create(0, &err);
    if (!g_be) {
        printf("skipped: %s\n", err.msg);
        return 77;
    }
    static const test_case cases[] = {
        {"round_trip_same_device", test_round_trip_same_device},
        {"round_trip_other_device", test_round_trip_other_device},
        {"own_handle_is_an_error", test_own_handle_is_an_error},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    g_be->ops->destroy(g_be);
    return rc;
}
