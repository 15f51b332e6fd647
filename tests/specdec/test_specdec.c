/* tests/specdec/test_specdec.c — decode/specdec.h without a model (label
 * specdec): prompt lookup finds the latest earlier n-gram and proposes
 * what followed; settings out of range are refused with a message; the
 * warped distribution is the one the CPU sampler draws from (200,000 draws);
 * greedy verification emits exactly the target's argmax tokens up to the
 * first mismatch; sampled verification keeps the target's distribution:
 * the first token emitted follows p1 and, after an accepted draft, the
 * second follows p2, whether the drafts are likely or not. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode/specdec.h"
#include "kernels/ops.h"
#include "test_util.h"

static void test_ngram_proposals(void) {
    int32_t out[8];
    const int32_t a[] = {5, 6, 7, 8, 9, 5, 6};
    CHECK(vidi_spec_ngram_propose(a, 7, 1, 3, 3, out) == 3 && out[0] == 7 && out[1] == 8 && out[2] == 9,
          "5 6 7 8 9 5 6: the bigram 5 6 is followed by 7 8 9");
    const int32_t b[] = {1, 2, 9, 1, 2, 8, 1, 2};
    CHECK(vidi_spec_ngram_propose(b, 8, 1, 2, 2, out) == 2 && out[0] == 8 && out[1] == 1,
          "the latest earlier occurrence wins: 1 2 -> 8 1, got %d %d", out[0], out[1]);
    const int32_t c[] = {1, 2, 3, 4};
    CHECK(vidi_spec_ngram_propose(c, 4, 1, 3, 4, out) == 0, "no repeat, no proposal");
    const int32_t d[] = {3, 4, 3};
    CHECK(vidi_spec_ngram_propose(d, 3, 2, 3, 4, out) == 0, "min_n 2: a unigram match is not enough");
    CHECK(vidi_spec_ngram_propose(d, 3, 1, 3, 4, out) == 2 && out[0] == 4 && out[1] == 3, "unigram 3 -> 4 3");
    const int32_t e[] = {7, 7, 7};
    CHECK(vidi_spec_ngram_propose(e, 3, 1, 3, 4, out) == 1 && out[0] == 7, "7 7 7: 7 7 -> 7");
}

static void test_settings(void) {
    vidi_spec_params p;
    vidi_err err = {0};
    CHECK(vidi_spec_params_parse("off", &p, &err) == VIDI_OK && p.mode == VIDI_SPEC_OFF, "off");
    CHECK(vidi_spec_params_parse("ngram", &p, &err) == VIDI_OK && p.mode == VIDI_SPEC_NGRAM && p.k == 4, "ngram");
    CHECK(vidi_spec_params_parse("ngram:6:2:4", &p, &err) == VIDI_OK && p.k == 6 && p.min_n == 2 && p.max_n == 4,
          "ngram:6:2:4");
    CHECK(vidi_spec_params_parse("draft", &p, &err) == VIDI_OK && p.mode == VIDI_SPEC_DRAFT && p.k == VIDI_SPEC_DRAFT_K, "draft");
    CHECK(vidi_spec_params_parse("draft:6", &p, &err) == VIDI_OK && p.mode == VIDI_SPEC_DRAFT && p.k == 6, "draft:6");
    const char *bad[] = {"ngram:0", "ngram:17", "ngram:4:0", "ngram:4:3:2", "ngram:4:1:9", "ngramx", "drafty",
                         "ngram:x", "ngram:4:1:3:7", "draft:0", "draft:17", "draft:4:2", "draft:"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err.msg[0] = 0;
        CHECK(vidi_spec_params_parse(bad[i], &p, &err) == VIDI_ERR_INVALID && strstr(err.msg, "speculative"),
              "'%s' accepted or no message (%s)", bad[i], err.msg);
    }
}

enum { V = 7, DRAWS = 200000 };
static const float L1[V] = {1.0f, 2.5f, 0.3f, 2.2f, -1.0f, 1.7f, 0.0f};
static const float L2[V] = {0.2f, -0.5f, 1.9f, 1.0f, 2.4f, 0.0f, 1.1f};

static double max_gap(const double *f, const double *p) {
    double g = 0;
    for (int i = 0; i < V; i++) g = fmax(g, fabs(f[i] - p[i]));
    return g;
}

static void test_warp_is_the_samplers_distribution(void) {
    vidi_err err = {0};
    vidi_backend *be = vidi_backend_cpu_create(1, &err);
    REQUIRE(be, "%s", err.msg);
    vidi_sample_params sps[3] = {{0.8f, 0, 1.0f}, {1.3f, 4, 1.0f}, {0.7f, 0, 0.8f}};
    for (int c = 0; c < 3; c++) {
        double p[V], f[V] = {0};
        vidi_spec_cand scratch[V];
        vidi_spec_warp(L1, V, &sps[c], p, scratch);
        float l[V];
        memcpy(l, L1, sizeof l);
        vidi_tensor t = vidi_tensor_2d(VIDI_DTYPE_F32, l, 1, V);
        uint64_t rng = vidi_rng_seed(7 + (uint64_t)c);
        for (int i = 0; i < DRAWS; i++) {
            int32_t tok;
            REQUIRE(be->ops->sample(be, &t, &sps[c], &rng, &tok, &err) == VIDI_OK, "%s", err.msg);
            f[tok] += 1.0 / DRAWS;
        }
        CHECK(max_gap(f, p) < 0.006, "case %d: sampler frequencies and the warped distribution differ by %.4f", c,
              max_gap(f, p));
    }
    be->ops->destroy(be);
}

static void test_greedy_verification(void) {
    float l[3 * V];
    memcpy(l, L1, sizeof L1), memcpy(l + V, L2, sizeof L2), memcpy(l + 2 * V, L1, sizeof L1);
    vidi_sample_params g = {0.0f, 0, 1.0f};
    double prob[V];
    vidi_spec_cand scratch[V];
    int32_t emit[3];
    uint64_t rng = 1;
    int32_t all[2] = {1, 4}; /* the argmaxes of L1 and L2 */
    CHECK(vidi_spec_verify(l, V, all, NULL, 2, &g, &rng, prob, scratch, emit) == 3 && emit[0] == 1 && emit[1] == 4 &&
              emit[2] == 1, "both accepted and the bonus: %d %d %d", emit[0], emit[1], emit[2]);
    int32_t second_wrong[2] = {1, 2};
    CHECK(vidi_spec_verify(l, V, second_wrong, NULL, 2, &g, &rng, prob, scratch, emit) == 2 && emit[0] == 1 && emit[1] == 4,
          "one accepted, then the correction 4: %d %d", emit[0], emit[1]);
    int32_t first_wrong[2] = {3, 4};
    CHECK(vidi_spec_verify(l, V, first_wrong, NULL, 2, &g, &rng, prob, scratch, emit) == 1 && emit[0] == 1,
          "the first rejected: the correction only (%d)", emit[0]);
    /* the same rule from argmax tokens taken on the device (the decoder's greedy rows) */
    const int32_t argmax[3] = {1, 4, 1};
    const int32_t *drafts[3] = {all, second_wrong, first_wrong};
    for (int c = 0; c < 3; c++) {
        int32_t e2[3];
        int n1 = vidi_spec_verify(l, V, drafts[c], NULL, 2, &g, &rng, prob, scratch, emit);
        int n2 = vidi_spec_verify_tokens(argmax, drafts[c], 2, e2);
        CHECK(n1 == n2 && !memcmp(emit, e2, (size_t)n1 * sizeof *emit), "case %d: from tokens %d, from logits %d", c,
              n2, n1);
    }
    CHECK(vidi_spec_verify_tokens(argmax, all, 0, emit) == 1 && emit[0] == 1, "no drafts: the argmax only");
    CHECK(vidi_spec_greedy(&g) && !vidi_spec_greedy(&(vidi_sample_params){0.7f, 0, 1.0f}) &&
              vidi_spec_greedy(&(vidi_sample_params){0.7f, 1, 1.0f}), "the greedy rule");
}

static void test_sampled_verification_keeps_the_distribution(void) {
    vidi_sample_params sp = {0.9f, 0, 1.0f};
    float l[3 * V];
    memcpy(l, L1, sizeof L1), memcpy(l + V, L2, sizeof L2), memcpy(l + 2 * V, L1, sizeof L1);
    double p1[V], p2[V], prob[V];
    vidi_spec_cand scratch[V];
    vidi_spec_warp(L1, V, &sp, p1, scratch);
    vidi_spec_warp(L2, V, &sp, p2, scratch);
    int32_t drafts[3][2] = {{1, 4}, {4, 0}, {2, 2}}; /* likely, unlikely, mixed */
    for (int c = 0; c < 3; c++) {
        double f1[V] = {0}, f2[V] = {0};
        int n2 = 0;
        uint64_t rng = vidi_rng_seed(100 + (uint64_t)c);
        int32_t emit[3];
        for (int i = 0; i < DRAWS; i++) {
            int n = vidi_spec_verify(l, V, drafts[c], NULL, 2, &sp, &rng, prob, scratch, emit);
            f1[emit[0]] += 1.0 / DRAWS;
            if (emit[0] == drafts[c][0] && n >= 2) f2[emit[1]] += 1, n2++;
        }
        for (int i = 0; i < V && n2; i++) f2[i] /= n2;
        CHECK(max_gap(f1, p1) < 0.006, "drafts %d %d: first token frequencies differ from p1 by %.4f", drafts[c][0],
              drafts[c][1], max_gap(f1, p1));
        /* four standard deviations of a frequency at most: 2 / sqrt(n) */
        CHECK(n2 > 1000 && max_gap(f2, p2) < 2.0 / sqrt((double)n2), "drafts %d %d: second token (n=%d) differs from p2 "
              "by %.4f", drafts[c][0], drafts[c][1], n2, max_gap(f2, p2));
    }
}

/* Drafts drawn from a draft model's distribution q (unlike p): the first
 * emitted token follows p1 and, after an accepted draft, the second p2. */
static void test_draft_distribution_verification_keeps_the_distribution(void) {
    vidi_sample_params sp = {1.0f, 0, 1.0f};
    static const float D1[V] = {2.0f, 0.0f, 1.5f, -1.0f, 0.5f, 0.0f, 1.0f}, D2[V] = {0.0f, 1.0f, 0.0f, 2.0f, 0.0f, 0.5f, 0.0f};
    float l[3 * V];
    memcpy(l, L1, sizeof L1), memcpy(l + V, L2, sizeof L2), memcpy(l + 2 * V, L1, sizeof L1);
    double p1[V], p2[V], prob[V], q[2 * V];
    vidi_spec_cand scratch[V];
    vidi_spec_warp(L1, V, &sp, p1, scratch);
    vidi_spec_warp(L2, V, &sp, p2, scratch);
    double f1[V] = {0}, f2[V] = {0};
    int n2 = 0, acc = 0;
    uint64_t rng = vidi_rng_seed(555), drng = vidi_rng_seed(556);
    int32_t emit[3], draft[2];
    for (int i = 0; i < DRAWS; i++) {
        draft[0] = vidi_spec_draft_token(D1, V, &sp, &drng, q, scratch);
        draft[1] = vidi_spec_draft_token(D2, V, &sp, &drng, q + V, scratch);
        int n = vidi_spec_verify(l, V, draft, q, 2, &sp, &rng, prob, scratch, emit);
        f1[emit[0]] += 1.0 / DRAWS;
        acc += n >= 2;
        if (n >= 2) f2[emit[1]] += 1, n2++;
    }
    for (int i = 0; i < V && n2; i++) f2[i] /= n2;
    CHECK(max_gap(f1, p1) < 0.006, "first token frequencies differ from p1 by %.4f", max_gap(f1, p1));
    CHECK(n2 > 1000 && max_gap(f2, p2) < 2.0 / sqrt((double)n2), "second token (n=%d) differs from p2 by %.4f", n2,
          max_gap(f2, p2));
    printf("     draft q != p: first draft accepted in %.3f of %d steps\n", (double)acc / DRAWS, DRAWS);
}

int main(int argc, char **argv) {
    static const test_case cases[] = {
        {"ngram_proposals", test_ngram_proposals},
        {"settings", test_settings},
        {"warp_is_the_samplers_distribution", test_warp_is_the_samplers_distribution},
        {"greedy_verification", test_greedy_verification},
        {"sampled_verification_keeps_the_distribution", test_sampled_verification_keeps_the_distribution},
        {"draft_distribution_verification_keeps_the_distribution",
         test_draft_distribution_verification_keeps_the_distribution},
    };
    return test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
}
