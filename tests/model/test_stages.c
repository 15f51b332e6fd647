/* tests/model/test_stages.c MODEL_DIR EXAMPLES_DIR — the EPD stages without
 * sockets give vidi_generate's answers (label model).
 *
 * For questions about the sample files in examples/ (media decoded by
 * media/), the tokens of vidi_generate in one process are compared with:
 * the router's prompt (one pad per item) expanded by prefill, vision
 * embeddings computed per item and per temporal slice (two halves of a
 * video encoded apart and concatenated, as two encode workers would),
 * vidi_prefill_run into a paged sequence, and all sequences decoded
 * together by one vidi_decoder (continuous batching, joining at different
 * steps). Greedy and seeded sampling both. Then again over a pool too
 * small for the answers, where sequences are swapped out to host memory and
 * back (decode's preemption by swap), with the same answers. Then with
 * speculative decoding by prompt lookup (the prompt as context, k 4): the
 * greedy answers are still vidi_generate's token for token, the sampled
 * ones finish within max_tokens, drafts were proposed and accepted, and the
 * KV length of every sequence stays its token count (label specdec too).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode/decode.h"
#include "kernels/ops.h"
#include "media/media.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "prefill/prefill.h"
#include "test_util.h"

static const char *g_model, *g_examples, *g_draft;

typedef struct q_case {
    const char *file;
    int video;
    const char *question;
    float temperature;
} q_case;

static const q_case k_cases[] = {
    {"video_500016.mp4", 1, "Describe the video.", 0.0f},
    {"image_500001.png", 0, "What colour is the square?", 0.0f},
    {"video_500018.webm", 1, "Which shape moves?", 0.0f},
    {"image_500003.jpg", 0, "Describe the image.", 0.8f},
    {"video_500016.mp4", 1, "What appears?", 0.7f},
};
#define N_CASES ((int)(sizeof k_cases / sizeof k_cases[0]))

/* The prompt lengths of the cases as the first run saw them (for sizing a
 * pool that is too small). */
static int64_t g_prompt_len[N_CASES];
static int g_move;      /* run_stages moves every running sequence every third step (a role switch's hand-off) */
static int g_moved, g_moved_draft; /* how many moves it made, with the draft's sequence in step */

/* A sequence through the hand-off layout: exported to host memory, freed,
 * imported into a new sequence of the pool (what a decode WORK carries). */
static vidi_kv_seq *moved_copy(vidi_kv_pool *pool, vidi_kv_seq *seq) {
    vidi_err err = {0};
    int64_t len = vidi_kv_seq_len(seq);
    size_t bytes = vidi_kv_seq_export_bytes(pool, len);
    void *buf = malloc(bytes ? bytes : 1);
    vidi_kv_seq *out = NULL;
    int ok = buf && vidi_kv_seq_export(seq, 0, len, buf, bytes, &err) == VIDI_OK;
    vidi_kv_seq_free(seq);
    ok = ok && vidi_kv_seq_create(pool, &out, &err) == VIDI_OK && vidi_kv_seq_import(out, buf, bytes, len, &err) == VIDI_OK;
    CHECK(ok, "the hand-off layout: %s", err.msg);
    free(buf);
    if (!ok) vidi_kv_seq_free(out);
    return ok ? out : NULL;
}

/* Every case through the stages over a pool of n_blocks blocks of 16 tokens
 * with `swap` host bytes for swapped-out KV, joining one per step (or all
 * before the first step: join_all); *st gets the decoder's counts. */
static void run_stages(int64_t n_blocks, uint64_t swap, int join_all, const char *spec, vidi_decoder_stats *st) {
    vidi_err err = {0};
    vidi_backend *be = vidi_backend_cpu_create(0, &err);
    REQUIRE(be, "cpu backend: %s", err.msg);
    vidi_model *m = NULL;
    vidi_tokenizer *tok = NULL;
    vidi_preproc_config pp;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", g_model);
    int ok = vidi_model_load(g_model, be, &m, &err) == VIDI_OK && vidi_preproc_config_load(g_model, &pp, &err) == VIDI_OK &&
             vidi_tokenizer_load(path, &tok, &err) == VIDI_OK;
    if (!ok) {
        CHECK(0, "load %s: %s", g_model, err.msg);
        goto out;
    }
    const vidi_model_config *cfg = &m->cfg;
    int64_t H = cfg->text.hidden_size;
    /* a step's rows: 8 sequences, each its pending token and up to 4 drafts */
    vidi_kv_pool_params kp = {.block_size = 16, .n_blocks = n_blocks, .max_seq_len = 4096, .max_batch = 8 * 5};
    vidi_kv_pool *pool = NULL;
    vidi_decoder *dec = NULL;
    REQUIRE(vidi_kv_pool_create(m->text, &kp, &pool, &err) == VIDI_OK, "pool: %s", err.msg);
    REQUIRE(vidi_decoder_create(m, pool, 8, &dec, &err) == VIDI_OK, "decoder: %s", err.msg);
    vidi_decoder_set_swap(dec, swap);
    vidi_model *dm = NULL; /* spec "draft:K": vidi-shapes-draft over its own pool */
    vidi_kv_pool *dpool = NULL;
    char spec_buf[64];
    int spec_batch = 0; /* "...@N": speculate while at most N sequences run */
    if (spec && strchr(spec, '@')) {
        snprintf(spec_buf, sizeof spec_buf, "%.*s", (int)(strchr(spec, '@') - spec), spec);
        spec_batch = atoi(strchr(spec, '@') + 1);
        spec = spec_buf;
    }
    if (spec && !strncmp(spec, "draft:", 6)) {
        REQUIRE(vidi_model_load(g_draft, be, &dm, &err) == VIDI_OK, "draft %s: %s", g_draft, err.msg);
        REQUIRE(vidi_kv_pool_create(dm->text, &kp, &dpool, &err) == VIDI_OK, "draft pool: %s", err.msg);
        REQUIRE(vidi_decoder_set_draft(dec, dm, dpool, atoi(spec + 6), &err) == VIDI_OK, "set_draft: %s", err.msg);
    } else {
        vidi_spec_params spp = vidi_spec_params_default();
        REQUIRE(vidi_spec_params_parse(spec, &spp, &err) == VIDI_OK && vidi_decoder_set_spec(dec, &spp, &err) == VIDI_OK,
                "spec %s: %s", spec ? spec : "off", err.msg);
    }
    vidi_decoder_set_spec_batch(dec, spec_batch);

    int32_t *want[N_CASES] = {0}, *got[N_CASES] = {0};
    int n_want[N_CASES] = {0}, n_got[N_CASES] = {0}, done[N_CASES] = {0};
    const int max_tokens = 40;
    for (int c = 0; c < N_CASES; c++) {
        want[c] = calloc(max_tokens, sizeof(int32_t));
        got[c] = calloc(max_tokens, sizeof(int32_t));
    }
    int step = 0, joined = 0;
    vidi_decode_event ev[N_CASES * (VIDI_SPEC_MAX_K + 1)];
    /* requests join the running batch one per step */
    while (joined < N_CASES || vidi_decoder_running(dec) > 0) {
        for (int k = 0; joined < N_CASES && (k == 0 || join_all); k++) {
            const q_case *q = &k_cases[joined];
            int c = joined++;
            uint8_t *data = NULL;
            size_t size = 0;
            vidi_media_item item = {0};
            vidi_media_options opt = vidi_media_options_default();
            vidi_media_limits lim = vidi_media_limits_default();
            snprintf(path, sizeof path, "%s/%s", g_examples, q->file);
            REQUIRE(vidi_media_read_file(path, NULL, 0, lim.max_bytes, &data, &size, &err) == VIDI_OK, "%s: %s", path,
                    err.msg);
            vidi_status st = q->video ? vidi_media_video_to_item(data, size, &pp, &opt, &lim, &item, &err)
                                      : vidi_media_image_to_item(data, size, &pp, &opt, &lim, &item, &err);
            free(data);
            REQUIRE(st == VIDI_OK, "%s: %s", path, err.msg);
            vidi_media md = {.kind = q->video ? VIDI_MEDIA_VIDEO : VIDI_MEDIA_IMAGE, .pixels = item.pixels,
                             .n_rows = item.rows, .second_per_grid_t = (float)item.second_per_grid_t};
            memcpy(md.grid, item.grid, sizeof md.grid);

            /* one process */
            int32_t *ids = NULL;
            int64_t n_ids = 0;
            REQUIRE(vidi_prompt_build(cfg, tok, NULL, q->question, &md, 1, &ids, &n_ids, &err) == VIDI_OK, "%s",
                    err.msg);
            vidi_generate_params gp = vidi_generate_params_default();
            gp.max_tokens = max_tokens;
            gp.sample.temperature = q->temperature;
            gp.seed = 1000 + (uint64_t)c;
            vidi_generate_result res;
            REQUIRE(vidi_generate(m, ids, n_ids, &md, 1, &gp, &res, &err) == VIDI_OK, "generate: %s", err.msg);
            memcpy(want[c], res.tokens, (size_t)res.n_tokens * sizeof(int32_t));
            n_want[c] = res.n_tokens;
            vidi_generate_result_free(&res);

            /* the stages: the router's prompt has one pad */
            vidi_media one = md;
            one.grid[0] = 1;
            one.grid[1] = one.grid[2] = cfg->vision.spatial_merge_size;
            int32_t *short_ids = NULL, *exp_ids = NULL;
            int64_t n_short = 0, n_exp = 0;
            REQUIRE(vidi_prompt_build(cfg, tok, NULL, q->question, &one, 1, &short_ids, &n_short, &err) == VIDI_OK,
                    "%s", err.msg);
            vidi_prefill_item pi = {.kind = md.kind, .second_per_grid_t = md.second_per_grid_t};
            memcpy(pi.grid, md.grid, sizeof pi.grid);
            REQUIRE(vidi_prefill_expand_pads(cfg, short_ids, n_short, &pi, 1, &exp_ids, &n_exp, &err) == VIDI_OK,
                    "expand: %s", err.msg);
            CHECK(n_exp == n_ids && !memcmp(exp_ids, ids, (size_t)n_ids * sizeof *ids),
                  "case %d: expanded prompt differs from vidi_prompt_build's", c);
            g_prompt_len[c] = n_exp;
            /* vision: videos in two temporal slices, as two encoders would */
            int64_t rows = vidi_prefill_item_rows(cfg, &pi);
            float *vis = calloc((size_t)(rows * H), sizeof(float));
            int T = md.grid[0], t0 = q->video && T > 1 ? T / 2 : T;
            int64_t per_t = (int64_t)md.grid[1] * md.grid[2];
            int64_t out_per_t = rows / T;
            for (int s = 0, t = 0; t < T; s++) {
                int tn = s == 0 ? t0 : T - t0;
                int32_t g[1][3] = {{tn, md.grid[1], md.grid[2]}};
                vidi_tensor part = vidi_tensor_2d(VIDI_DTYPE_F32, vis + (size_t)(t * out_per_t * H), tn * out_per_t, H);
                REQUIRE(vidi_vision_encode(m->vision, md.pixels + (size_t)(t * per_t * item.cols), tn * per_t, g, 1,
                                           &part, &err) == VIDI_OK,
                        "encode slice: %s", err.msg);
                t += tn;
            }
            vidi_tensor vt = vidi_tensor_2d(VIDI_DTYPE_F32, vis, rows, H);
            vidi_kv_seq *seq = NULL;
            REQUIRE(vidi_kv_seq_create(pool, &seq, &err) == VIDI_OK, "%s", err.msg);
            uint64_t rng = vidi_rng_seed(1000 + (uint64_t)c);
            vidi_sample_params sp = {.temperature = q->temperature, .top_k = 0, .top_p = 1.0f};
            vidi_prefill_result pr;
            REQUIRE(vidi_prefill_run(m, seq, exp_ids, n_exp, &pi, 1, &vt, &sp, &rng, &pr, &err) == VIDI_OK,
                    "prefill: %s", err.msg);
            got[c][n_got[c]++] = pr.first_token;
            vidi_decode_params dp = {.sample = sp, .max_tokens = max_tokens, .stop_at_eos = 1};
            if (vidi_decode_check(cfg, &dp, pr.first_token, 1) != VIDI_DECODE_RUNNING) {
                done[c] = 1;
                vidi_kv_seq_free(seq);
            } else {
                REQUIRE(vidi_decoder_add(dec, (uint64_t)c, seq, pr.first_token, 1, pr.rope_delta, rng, &dp, &err) ==
                            VIDI_OK,
                        "add: %s", err.msg);
                if (spec && !dm)
                    REQUIRE(vidi_decoder_add_context(dec, (uint64_t)c, exp_ids, n_exp, &err) == VIDI_OK, "context: %s",
                            err.msg);
                if (dm) { /* the draft's own vision embeddings and prefill */
                    int64_t dh = dm->cfg.text.hidden_size;
                    float *dvis = calloc((size_t)(rows * dh), sizeof(float));
                    vidi_tensor dvt = vidi_tensor_2d(VIDI_DTYPE_F32, dvis, rows, dh);
                    REQUIRE(vidi_vision_encode(dm->vision, md.pixels, md.n_rows, (const int32_t(*)[3])md.grid, 1, &dvt,
                                               &err) == VIDI_OK,
                            "draft vision: %s", err.msg);
                    vidi_kv_seq *dseq = NULL;
                    REQUIRE(vidi_kv_seq_create(dpool, &dseq, &err) == VIDI_OK, "%s", err.msg);
                    uint64_t drng = vidi_rng_seed(77);
                    vidi_prefill_result dpr;
                    REQUIRE(vidi_prefill_run(dm, dseq, exp_ids, n_exp, &pi, 1, &dvt, &sp, &drng, &dpr, &err) == VIDI_OK,
                            "draft prefill: %s", err.msg);
                    REQUIRE(vidi_decoder_add_draft(dec, (uint64_t)c, dseq, dpr.rope_delta, &err) == VIDI_OK,
                            "add_draft: %s", err.msg);
                    free(dvis);
                }
            }
            free(vis);
            free(ids);
            free(short_ids);
            free(exp_ids);
            vidi_media_item_free(&item);
        }
        int n_ev = 0;
        REQUIRE(vidi_decoder_max_events(dec) <= (int)(sizeof ev / sizeof ev[0]), "max events %d",
                vidi_decoder_max_events(dec));
        REQUIRE(vidi_decoder_step(dec, ev, &n_ev, &err) == VIDI_OK, "step %d: %s", step, err.msg);
        for (int e = 0; e < n_ev; e++) {
            int c = (int)ev[e].tag;
            CHECK(ev[e].state != VIDI_DECODE_PREEMPTED, "case %d preempted (%lld blocks, swap %llu bytes)", c,
                  (long long)n_blocks, (unsigned long long)swap);
            CHECK(ev[e].index == n_got[c], "case %d: event index %d, expected %d", c, ev[e].index, n_got[c]);
            if (n_got[c] < max_tokens) got[c][n_got[c]++] = ev[e].token;
            if (ev[e].state != VIDI_DECODE_RUNNING) done[c] = 1;
        }
        /* every running sequence taken out and handed back through the hand-off layout, its
         * state (last token, count, sampler, the draft when in step) with it */
        for (int c = 0; g_move && step % 3 == 2 && c < joined; c++) {
            vidi_decoder_taken t;
            if (done[c] || !vidi_decoder_take(dec, (uint64_t)c, &t)) continue;
            CHECK(t.n_out == n_got[c] && t.pending == got[c][n_got[c] - 1], "case %d: taken at %d tokens, last %d", c,
                  t.n_out, t.pending);
            vidi_sample_params sp = {.temperature = k_cases[c].temperature, .top_k = 0, .top_p = 1.0f};
            vidi_decode_params dp = {.sample = sp, .max_tokens = max_tokens, .stop_at_eos = 1};
            vidi_kv_seq *ms = moved_copy(pool, t.seq), *md = t.dseq ? moved_copy(dpool, t.dseq) : NULL;
            REQUIRE(ms && vidi_decoder_add(dec, (uint64_t)c, ms, t.pending, t.n_out, t.rope_delta, t.rng, &dp, &err) ==
                              VIDI_OK,
                    "re-add: %s", err.msg);
            if (md) {
                REQUIRE(vidi_decoder_add_draft_lag(dec, (uint64_t)c, md, t.drope, t.dlag, &err) == VIDI_OK,
                        "re-add draft: %s", err.msg);
                g_moved_draft++;
            }
            g_moved++;
        }
        step++;
    }
    for (int c = 0; c < N_CASES; c++) {
        CHECK(done[c], "case %d never finished", c);
        if (spec && k_cases[c].temperature > 0) { /* sampled: another random stream, the same distribution */
            CHECK(n_got[c] >= 1 && n_got[c] <= max_tokens, "case %d: %d tokens", c, n_got[c]);
            free(want[c]);
            free(got[c]);
            continue;
        }
        CHECK(n_got[c] == n_want[c] && !memcmp(got[c], want[c], (size_t)n_want[c] * sizeof(int32_t)),
              "case %d (%s, %s, T=%.1f): stages gave %d tokens, vidi_generate %d (first differing at %d)", c,
              k_cases[c].file, k_cases[c].question, k_cases[c].temperature, n_got[c], n_want[c],
              ({
                  int d = 0;
                  while (d < n_got[c] && d < n_want[c] && got[c][d] == want[c][d]) d++;
                  d;
              }));
        free(want[c]);
        free(got[c]);
    }
    *st = vidi_decoder_get_stats(dec);
    printf("%d requests through prefill + batched decode in %d steps (%lld blocks; swapped out %llu, in %llu; "
           "speculative %s: %llu target steps over drafts, %llu of %llu drafts accepted): equal to vidi_generate\n",
           N_CASES, step, (long long)n_blocks, (unsigned long long)st->swapped_out, (unsigned long long)st->swapped_in,
           spec ? spec : "off", (unsigned long long)st->spec_steps, (unsigned long long)st->spec_accepted,
           (unsigned long long)st->spec_proposed);
    vidi_decoder_free(dec);
    vidi_kv_pool_free(pool);
    vidi_kv_pool_free(dpool);
    vidi_model_free(dm);
out:
    vidi_tokenizer_free(tok);
    vidi_model_free(m);
    be->ops->destroy(be);
}

static void test_stages_equal_generate(void) {
    vidi_decoder_stats st = {0};
    run_stages(512, 0, 0, NULL, &st);
    CHECK(st.swapped_out == 0 && st.preempted == 0, "a large pool swapped or preempted");
}

/* A pool that holds the prompts but not their answers (all prefilled
 * first): the youngest sequences are swapped out to host memory and back,
 * and every answer is still vidi_generate's. */
static void test_swapping_under_a_small_pool_equals_generate(void) {
    vidi_decoder_stats st = {0};
    if (!g_prompt_len[0]) run_stages(512, 0, 0, NULL, &st);
    int64_t blocks = 0;
    for (int c = 0; c < N_CASES; c++) blocks += (g_prompt_len[c] + 15) / 16;
    run_stages(blocks, 64u << 20, 1, NULL, &st);
    CHECK(st.swapped_out > 0 && st.swapped_in == st.swapped_out && st.preempted == 0 && st.swapped_now == 0 &&
              st.swap_bytes == 0,
          "swapped out %llu, in %llu, preempted %llu, out now %d (%llu bytes)", (unsigned long long)st.swapped_out,
          (unsigned long long)st.swapped_in, (unsigned long long)st.preempted, st.swapped_now,
          (unsigned long long)st.swap_bytes);
}

/* Sequences handed on mid-answer (vidi_decoder_take, the KV through the
 * hand-off layout, the state re-added: what a decoder leaving decode does)
 * give vidi_generate's tokens, greedy and sampled (the sampler's state moves
 * with them); with the draft model too, greedy. */
static void test_moved_sequences_equal_generate(void) {
    vidi_decoder_stats st = {0};
    g_move = 1, g_moved = 0;
    run_stages(512, 0, 0, NULL, &st);
    CHECK(g_moved > 0, "no sequence was moved");
    int plain = g_moved;
    g_moved = g_moved_draft = 0;
    run_stages(512, 0, 0, "draft:4", &st);
    CHECK(g_moved_draft > 0 && st.spec_accepted > 0, "draft: %d moves (%d with the draft's KV), %llu drafts accepted",
          g_moved, g_moved_draft, (unsigned long long)st.spec_accepted);
    printf("moved %d sequences plainly, %d with the draft (%d with its KV)\n", plain, g_moved, g_moved_draft);
    g_move = 0;
}

/* Speculative decoding by prompt lookup: greedy answers token for token
 * vidi_generate's, drafts proposed and some accepted. */
static void test_speculative_greedy_equals_generate(void) {
    vidi_decoder_stats st = {0};
    run_stages(512, 0, 0, "ngram:4:1:3", &st);
    CHECK(st.spec_steps > 0 && st.spec_proposed > 0 && st.spec_accepted > 0 && st.spec_accepted <= st.spec_proposed &&
              st.spec_emitted <= st.spec_accepted + st.spec_steps && st.spec_emitted > st.spec_steps,
          "speculative steps %llu, proposed %llu, accepted %llu, emitted %llu", (unsigned long long)st.spec_steps,
          (unsigned long long)st.spec_proposed, (unsigned long long)st.spec_accepted,
          (unsigned long long)st.spec_emitted);
    /* prompt lookup is mostly wrong on these short answers: k adapts down */
    CHECK(st.spec_proposed < 4 * st.spec_steps, "k did not adapt: %llu drafts in %llu steps of k 4",
          (unsigned long long)st.spec_proposed, (unsigned long long)st.spec_steps);
}

/* Speculation with the draft model vidi-shapes-draft (its own vision tower
 * and prefill, 4 drafts a step): greedy answers token for token
 * vidi_generate's, and most drafts accepted. */
static void test_draft_model_greedy_equals_generate(void) {
    vidi_decoder_stats st = {0};
    run_stages(512, 0, 0, "draft:4", &st);
    CHECK(st.spec_steps > 0 && st.spec_accepted > 0 && st.spec_accepted <= st.spec_proposed &&
              st.spec_emitted <= st.spec_accepted + st.spec_steps && st.spec_emitted > st.spec_steps,
          "draft: steps %llu, proposed %llu, accepted %llu, emitted %llu", (unsigned long long)st.spec_steps,
          (unsigned long long)st.spec_proposed, (unsigned long long)st.spec_accepted,
          (unsigned long long)st.spec_emitted);
    printf("     draft model: %.2f tokens per target step over drafts; acceptance by position:", st.spec_steps ?
           (double)st.spec_emitted / (double)st.spec_steps : 0.0);
    for (int j = 0; j < 4; j++)
        printf(" %.2f", st.spec_proposed_at[j] ? (double)st.spec_accepted_at[j] / (double)st.spec_proposed_at[j] : 0.0);
    printf("\n");
}

/* The distilled one-layer draft (models/vidi-shapes-draft1, fed the lag
 * token and its drafts in one chained call): greedy answers token for
 * token vidi_generate's, and it agrees with the target more often than
 * not. */
static void test_distilled_draft_greedy_equals_generate(void) {
    static char d1[4096];
    snprintf(d1, sizeof d1, "%s-draft1", g_model);
    const char *keep = g_draft;
    g_draft = d1;
    vidi_decoder_stats st = {0};
    run_stages(512, 0, 0, "draft:4", &st);
    g_draft = keep;
    CHECK(st.spec_steps > 0 && 2 * st.spec_accepted > st.spec_proposed && st.spec_emitted > 2 * st.spec_steps,
          "draft1: steps %llu, proposed %llu, accepted %llu, emitted %llu", (unsigned long long)st.spec_steps,
          (unsigned long long)st.spec_proposed, (unsigned long long)st.spec_accepted,
          (unsigned long long)st.spec_emitted);
    printf("     draft1: %.2f tokens per target step over drafts, %llu of %llu drafts accepted\n",
           st.spec_steps ? (double)st.spec_emitted / (double)st.spec_steps : 0.0,
           (unsigned long long)st.spec_accepted, (unsigned long long)st.spec_proposed);
}

/* Speculation only while one sequence runs alone (vidi_decoder_set_spec_batch
 * 1; the 5 requests arrive a step apart): steps with more are plain (the
 * draft sequences dropped); greedy answers still equal vidi_generate's,
 * with fewer drafting steps. */
static void test_speculation_only_at_small_batch(void) {
    vidi_decoder_stats all = {0}, small = {0};
    run_stages(512, 0, 0, "draft:4", &all);
    run_stages(512, 0, 0, "ngram:4@1", &small);
    CHECK(small.spec_steps > 0, "no speculation while one sequence ran alone");
    run_stages(512, 0, 0, "draft:4@1", &small);
    CHECK(small.spec_steps < all.spec_steps, "draft speculation at batch 1 only: %llu steps, always: %llu",
          (unsigned long long)small.spec_steps, (unsigned long long)all.spec_steps);
}

/* A draft of another vocabulary (the tiny Qwen2-VL test checkpoint: 832
 * tokens, other special ids) is refused with a message; so are k out of
 * range and drafts without a draft model. */
static void test_bad_speculation_settings_are_refused(void) {
    vidi_err err = {0};
    vidi_backend *be = vidi_backend_cpu_create(1, &err);
    REQUIRE(be, "%s", err.msg);
    vidi_model *m = NULL, *other = NULL;
    vidi_kv_pool *pool = NULL;
    vidi_decoder *dec = NULL;
    REQUIRE(vidi_model_load(g_model, be, &m, &err) == VIDI_OK, "%s", err.msg);
    REQUIRE(vidi_model_load(test_data_path("models/tiny-qwen2vl"), be, &other, &err) == VIDI_OK, "%s", err.msg);
    vidi_kv_pool_params kp = {.block_size = 16, .n_blocks = 64, .max_seq_len = 1024, .max_batch = 2};
    REQUIRE(vidi_kv_pool_create(m->text, &kp, &pool, &err) == VIDI_OK, "%s", err.msg);
    REQUIRE(vidi_decoder_create(m, pool, 2, &dec, &err) == VIDI_OK, "%s", err.msg);
    CHECK(vidi_decoder_set_draft(dec, other, pool, 4, &err) == VIDI_ERR_INVALID && strstr(err.msg, "vocabulary"),
          "a draft of another vocabulary accepted (%s)", err.msg);
    err.msg[0] = 0;
    CHECK(vidi_decoder_set_draft(dec, m, pool, 0, &err) == VIDI_ERR_INVALID && strstr(err.msg, "k 0"),
          "k 0 accepted (%s)", err.msg);
    vidi_kv_seq *seq = NULL;
    REQUIRE(vidi_kv_seq_create(pool, &seq, &err) == VIDI_OK, "%s", err.msg);
    CHECK(vidi_decoder_add_draft(dec, 1, seq, 0, &err) == VIDI_ERR_INVALID && strstr(err.msg, "no draft model"),
          "a draft sequence without a draft model accepted (%s)", err.msg);
    vidi_decoder_free(dec);
    vidi_kv_pool_free(pool);
    vidi_model_free(other);
    vidi_model_free(m);
    be->ops->destroy(be);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_stages MODEL_DIR EXAMPLES_DIR [case]\n");
        return 2;
    }
    g_model = argv[1];
    g_examples = argv[2];
    /* the draft model beside the target: MODEL_DIR-draft (models/vidi-shapes-draft) */
    static char draft[4096];
    snprintf(draft, sizeof draft, "%s-draft", g_model);
    g_draft = draft;
    static const test_case cases[] = {
        {"stages_equal_generate", test_stages_equal_generate},
        {"swapping_under_a_small_pool_equals_generate", test_swapping_under_a_small_pool_equals_generate},
        {"moved_sequences_equal_generate", test_moved_sequences_equal_generate},
        {"speculative_greedy_equals_generate", test_speculative_greedy_equals_generate},
        {"draft_model_greedy_equals_generate", test_draft_model_greedy_equals_generate},
        {"distilled_draft_greedy_equals_generate", test_distilled_draft_greedy_equals_generate},
        {"speculation_only_at_small_batch", test_speculation_only_at_small_batch},
        {"bad_speculation_settings_are_refused", test_bad_speculation_settings_are_refused},
    };
    char *sub[] = {argv[0], argc > 3 ? argv[3] : NULL};
    return test_main(argc > 3 ? 2 : 1, sub, cases, (int)(sizeof cases / sizeof cases[0]));
}
