/* tests/ipc/test_switch_policy.c — the role-switching policy's choice of a
 * giver (PROTOCOL.md §5.6). GPU sharing (vidi_switch_gpu_clash): a second
 * worker of a role on one GPU counts 2, a busy GPU stage beside it 1, an idle
 * one or one on another GPU nothing; media and workers on the CPU count
 * nothing; the least keeps decoders apart on the layout the 4-GPU benchmark
 * starts. Sparing (vidi_switch_can_spare): one worker never; the wait and,
 * but for decode, the utilisation spread over one worker fewer decide.
 */
#include "ipc/router.h"
#include "test_util.h"

enum { M = 1, E = 2, P = 4, D = 8 };

static void test_counts(void) {
    int busy[4] = {0, 1, 1, 1}, idle[4] = {0, 0, 0, 0};
    int dev[] = {0, 0, 1, -1}, roles[] = {D, P, D, D};
    /* decode on GPU 0: one decoder there (2) and a busy prefill (1) */
    CHECK(vidi_switch_gpu_clash(0, 3, dev, roles, 4, busy) == 3, "decode on GPU 0: %d",
          vidi_switch_gpu_clash(0, 3, dev, roles, 4, busy));
    /* the prefill idle: the decoder alone counts */
    CHECK(vidi_switch_gpu_clash(0, 3, dev, roles, 4, idle) == 2, "decode on GPU 0, prefill idle: %d",
          vidi_switch_gpu_clash(0, 3, dev, roles, 4, idle));
    /* encode on GPU 1: a busy decoder beside it */
    CHECK(vidi_switch_gpu_clash(1, 1, dev, roles, 4, busy) == 1, "encode on GPU 1: %d",
          vidi_switch_gpu_clash(1, 1, dev, roles, 4, busy));
    /* GPU 2: nobody */
    CHECK(vidi_switch_gpu_clash(2, 3, dev, roles, 4, busy) == 0, "decode on GPU 2: %d",
          vidi_switch_gpu_clash(2, 3, dev, roles, 4, busy));
    /* media runs on the CPU; a CPU worker shares no GPU (the -1 of the others is no device) */
    CHECK(vidi_switch_gpu_clash(0, 0, dev, roles, 4, busy) == 0, "media counted");
    CHECK(vidi_switch_gpu_clash(-1, 3, dev, roles, 4, busy) == 0, "a CPU worker counted");
    /* a worker of several roles counts once: 2 when it holds the role, else 1 when busy */
    int dev2[] = {3, 3}, roles2[] = {E | P | D, M | E};
    CHECK(vidi_switch_gpu_clash(3, 3, dev2, roles2, 2, busy) == 3, "colocated neighbours: %d",
          vidi_switch_gpu_clash(3, 3, dev2, roles2, 2, busy));
    /* a media worker beside it is no GPU stage */
    int dev3[] = {1}, roles3[] = {M};
    CHECK(vidi_switch_gpu_clash(1, 3, dev3, roles3, 1, busy) == 0, "a media neighbour counted");
    CHECK(vidi_switch_gpu_clash(1, 4, dev3, roles3, 1, busy) == 0, "role 4 counted");
}

/* 6 workers on 4 GPUs (bench/roles: worker i on GPU i mod 4), split 2/2/1/1:
 * m@0 m@1 e@2 e@3 p@0 d@1. Decode is starved in a text phase (encode and media
 * idle, prefill busy): an encoder's own GPU (0) beats media's GPU 0 (a busy
 * prefill, 1) and GPU 1 (the decoder, 2). */
static void test_layout(void) {
    int dev[6] = {0, 1, 2, 3, 0, 1}, roles[6] = {M, M, E, E, P, D}, busy[4] = {0, 0, 1, 1};
    int c[6];
    for (int i = 0; i < 6; i++) {
        int d[5], r[5], n = 0;
        for (int j = 0; j < 6; j++)
            if (j != i) d[n] = dev[j], r[n++] = roles[j];
        c[i] = vidi_switch_gpu_clash(dev[i], 3, d, r, n, busy);
    }
    CHECK(c[0] == 1 && c[1] == 2 && c[2] == 0 && c[3] == 0, "clash of m@0 m@1 e@2 e@3: %d %d %d %d", c[0], c[1], c[2],
          c[3]);
}

/* the cases of the 4 x H100 runs (bench/results/roles-switch-4gpu-switches.log) */
static void test_can_spare(void) {
    /* prefill 40 % over 2 would be 80 % over 1: at its limit, refused (the move that was undone) */
    CHECK(!vidi_switch_can_spare(2, 40, 2, 0, 100, 70, 0), "prefill 40 %% over 2 spared");
    CHECK(vidi_switch_can_spare(2, 30, 2, 0, 100, 70, 0), "prefill 30 %% over 2 refused");
    CHECK(vidi_switch_can_spare(2, 21, 3, 0, 100, 70, 0), "prefill 21 %% over 3 refused");
    /* media 1 % over 2: idle, spared */
    CHECK(vidi_switch_can_spare(0, 1, 2, 0, 100, 70, 0), "idle media refused");
    /* decode: its busy share says little (a decoder steps whenever a sequence runs) */
    CHECK(vidi_switch_can_spare(3, 82, 2, 10, 25, 70, 0), "decode 82 %% over 2, 10 ms waiting, refused");
    CHECK(!vidi_switch_can_spare(3, 82, 2, 20, 25, 70, 0), "decode with 40 ms of wait over 1 spared");
    /* one worker never */
    CHECK(!vidi_switch_can_spare(1, 0, 1, 0, 100, 70, 0), "a stage's only worker spared");
    CHECK(!vidi_switch_can_spare(1, 0, 0, 0, 100, 70, 0), "a stage of no worker spared");
    /* the wait spread over one worker fewer: 40 ms over 2 is 80 over 1 */
    CHECK(vidi_switch_can_spare(1, 10, 2, 40, 100, 70, 0), "encode, 80 ms over 1 under 100, refused");
    CHECK(!vidi_switch_can_spare(1, 10, 2, 50, 100, 70, 0), "encode, 100 ms over 1 spared");
    /* --switch-share: under half the backlog */
    CHECK(!vidi_switch_can_spare(1, 10, 2, 40, 100, 70, 1), "share: 80 ms over 1 not under 50, spared");
    CHECK(vidi_switch_can_spare(1, 10, 2, 20, 100, 70, 1), "share: 40 ms over 1 refused");
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"counts", test_counts},
        {"layout", test_layout},
        {"can_spare", test_can_spare},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
