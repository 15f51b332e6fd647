/* tests/unit/test_text_paged.c — the decoder over a paged KV pool against
 * the one-sequence path with a contiguous KV cache (model/text.h), on the
 * tiny parity checkpoints.
 *
 * The backend is the CPU, or CUDA when VIDI_TEST_BACKEND=cuda (the ctest
 * gpu_text_paged; exit 77 without a device). For each model: three prompts
 * of different lengths (one appended in two chunks, so a chunk attends to a
 * gathered prefix), then 20 batched decode steps fed the tokens the
 * contiguous path chose (teacher forcing, so a near-tie cannot make the
 * paths part), the third sequence leaving the batch after 10 steps. Every
 * logits row must match the contiguous path's: CPU max|diff| <= 1e-4 *
 * max|ref| + 1e-5 (fp32; only summation order differs), CUDA <= 5e-2 *
 * max|ref| + 2e-2 (bf16 activations, different kernels). Block accounting
 * (truncate, free), an exhausted pool and bad arguments are checked too.
 * The *_copied cases run the CPU backend with copied weights, so that the
 * fused q/k/v path of GPU builds (qkv_rope_store) runs here too.
 *
 * The *_handoff cases move a prefilled sequence's KV through the host
 * (vidi_kv_seq_export / vidi_kv_seq_import) from a pool of 16-token blocks
 * into pools of 8-token blocks, whole and in two sub-ranges, and decode
 * greedily on both sides: the logits must be bitwise equal on the CPU
 * (within the CUDA tolerance there). Layer 0's exported K (token 0, where
 * the rotation is the identity) and V (every token) are checked against
 * the checkpoint's projections computed on the host, which pins the
 * layout; refused imports and exports leave the sequences as they were.
 */
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model/text.h"

enum { N_SEQ = 3, STEPS = 20, LEAVE_AT = 10 };

static vidi_backend *g_be;
static int g_cuda;

static double tol_of(double ref_max) { return g_cuda ? 5e-2 * ref_max + 2e-2 : 1e-4 * ref_max + 1e-5; }

static int compare(const char *what, const float *got, const float *ref, int64_t n) {
    double mx = 0, d = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
        double e = fabs((double)got[i] - ref[i]);
        if (!(e <= d)) d = e;  /* NaN propagates */
    }
    int ok = d <= tol_of(mx);
    CHECK(ok, "%s: max|diff| %.3g > tolerance %.3g (max|ref| %.3g)", what, d, tol_of(mx), mx);
    return ok;
}

static int argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return (int)b;
}

static void text_pos(int32_t *pos, int64_t start, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        for (int a = 0; a < 3; a++) pos[3 * i + a] = (int32_t)(start + i);
}

static void run_model(const char *rel) {
    vidi_err err;
    vidi_model *m = NULL;
    vidi_kv_pool *pool = NULL;
    vidi_kv_seq *seq[N_SEQ] = {0};
    vidi_kv_cache *kv[N_SEQ] = {0};
    void *emb = NULL, *lg = NULL;
    float *ref = NULL, *got = NULL;
    int32_t *ids = NULL, *pos = NULL;
    const int64_t plen[N_SEQ] = {5, 21, 37};
    int32_t toks[N_SEQ][STEPS + 1];
    vidi_backend *be = g_be;

    REQUIRE(vidi_model_load(test_data_path(rel), be, &m, &err) == VIDI_OK, "%s: load: %s", rel, err.msg);
    vidi_text *t = m->text;
    int64_t H = vidi_text_hidden_size(t), V = vidi_text_vocab_size(t);
    size_t es = vidi_dtype_size(be->act_dtype);
    const int64_t maxp = 40;
    emb = be->ops->buf_alloc(be, (size_t)(maxp * H) * es);
    lg = be->ops->buf_alloc(be, (size_t)((N_SEQ + 1) * V) * es);
    ref = malloc((size_t)(N_SEQ * (STEPS + 1) * V) * sizeof *ref);
    got = malloc((size_t)(N_SEQ * V) * sizeof *got);
    ids = malloc((size_t)maxp * sizeof *ids);
    pos = malloc((size_t)maxp * 3 * sizeof *pos);
    if (!emb || !lg || !ref || !got || !ids || !pos) {
        CHECK(0, "out of memory");
        goto done;
    }

    /* The reference: each sequence alone on a contiguous cache, greedy. */
    unsigned long long rs = 12345;
    int64_t embed_vocab = V < 200 ? V : 200;  /* plain byte-level ids */
    for (int s = 0; s < N_SEQ; s++) {
        if (vidi_kv_cache_create(t, plen[s] + STEPS + 4, &kv[s], &err) != VIDI_OK) {
            CHECK(0, "kv cache: %s", err.msg);
            goto done;
        }
        for (int64_t i = 0; i < plen[s]; i++) {
            rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
            ids[i] = (int32_t)((rs >> 33) % (unsigned long long)embed_vocab);
        }
        vidi_tensor te = vidi_tensor_2d(be->act_dtype, emb, plen[s], H);
        vidi_tensor tl = vidi_tensor_2d(be->act_dtype, lg, 1, V);
        vidi_text_out o = {.which = VIDI_TEXT_LOGITS_LAST, .logits = &tl};
        text_pos(pos, 0, plen[s]);
        if (vidi_text_embed(t, ids, plen[s], NULL, &te, &err) || vidi_text_forward(t, kv[s], &te, pos, &o, &err)) {
            CHECK(0, "reference prefill: %s", err.msg);
            goto done;
        }
        /* Paged sequences get the same prompt now: seq 1 in two chunks. */
        if (!pool) {
            vidi_kv_pool_params pp = {.block_size = 4, .n_blocks = 64, .max_seq_len = 64, .max_batch = 4};
            if (vidi_kv_pool_create(t, &pp, &pool, &err) != VIDI_OK) {
                CHECK(0, "pool: %s", err.msg);
                goto done;
            }
        }
        float *r = ref + (size_t)(s * (STEPS + 1)) * V;
        if (vidi_download_f32(be, r, lg, (size_t)V, &err) != VIDI_OK) {
            CHECK(0, "download: %s", err.msg);
            goto done;
        }
        toks[s][0] = argmax(r, V);
        if (vidi_kv_seq_create(pool, &seq[s], &err) != VIDI_OK) {
            CHECK(0, "seq: %s", err.msg);
            goto done;
        }
        int64_t cut = s == 1 ? 13 : plen[s];
        for (int64_t at = 0; at < plen[s]; at = cut, cut = plen[s]) {
            vidi_tensor tc = vidi_tensor_2d(be->act_dtype, (char *)emb + (size_t)(at * H) * es, cut - at, H);
            vidi_text_out po = {.which = cut == plen[s] ? VIDI_TEXT_LOGITS_LAST : VIDI_TEXT_LOGITS_NONE,
                                .logits = &tl};
            if (vidi_text_forward_paged(t, seq[s], &tc, pos + 3 * at, &po, &err) != VIDI_OK) {
                CHECK(0, "paged prefill of sequence %d: %s", s, err.msg);
                goto done;
            }
        }
        CHECK(vidi_kv_seq_len(seq[s]) == plen[s], "sequence %d holds %lld tokens", s,
              (long long)vidi_kv_seq_len(seq[s]));
        if (vidi_download_f32(be, got, lg, (size_t)V, &err) != VIDI_OK) {
            CHECK(0, "download: %s", err.msg);
            goto done;
        }
        char what[64];
        snprintf(what, sizeof what, "%s prompt %d logits", rel, s);
        compare(what, got, r, V);
        for (int k = 1; k <= STEPS; k++) {
            int32_t p3[3];
            text_pos(p3, plen[s] + k - 1, 1);
            if (vidi_text_decode_step(t, kv[s], toks[s][k - 1], p3, &tl, 0, &err) != VIDI_OK) {
                CHECK(0, "reference decode: %s", err.msg);
                goto done;
            }
            float *rk = ref + (size_t)(s * (STEPS + 1) + k) * V;
            if (vidi_download_f32(be, rk, lg, (size_t)V, &err) != VIDI_OK) {
                CHECK(0, "download: %s", err.msg);
                goto done;
            }
            toks[s][k] = argmax(rk, V);
        }
    }

    /* Batched steps, teacher-forced with the reference's tokens. */
    for (int k = 1; k <= STEPS; k++) {
        int B = k <= LEAVE_AT ? N_SEQ : N_SEQ - 1;
        int32_t bid[N_SEQ], bpos[3 * N_SEQ];
        for (int b = 0; b < B; b++) {
            bid[b] = toks[b][k - 1];
            text_pos(bpos + 3 * b, plen[b] + k - 1, 1);
        }
        vidi_tensor tl = vidi_tensor_2d(be->act_dtype, lg, B, V);
        if (vidi_text_decode_batch(t, pool, B, seq, bid, bpos, &tl, 1, &err) != VIDI_OK) {
            CHECK(0, "decode batch, step %d: %s", k, err.msg);
            goto done;
        }
        if (vidi_download_f32(be, got, lg, (size_t)(B * V), &err) != VIDI_OK) {
            CHECK(0, "download: %s", err.msg);
            goto done;
        }
        for (int b = 0; b < B; b++) {
            char what[80];
            snprintf(what, sizeof what, "%s step %d sequence %d", rel, k, b);
            if (!compare(what, got + (size_t)b * V, ref + (size_t)(b * (STEPS + 1) + k) * V, V)) goto done;
        }
    }
    for (int s = 0; s < N_SEQ; s++) {
        int64_t want = plen[s] + (s < N_SEQ - 1 ? STEPS : LEAVE_AT);
        CHECK(vidi_kv_seq_len(seq[s]) == want, "sequence %d: %lld tokens, want %lld", s,
              (long long)vidi_kv_seq_len(seq[s]), (long long)want);
    }

    /* Accounting: blocks held are exactly ceil(len / 4); truncate and free
     * give them back. */
    int64_t held = 0;
    for (int s = 0; s < N_SEQ; s++) held += vidi_kv_pool_blocks_for(pool, vidi_kv_seq_len(seq[s]));
    CHECK(vidi_kv_pool_free_blocks(pool) == 64 - held, "free blocks %lld, want %lld",
          (long long)vidi_kv_pool_free_blocks(pool), (long long)(64 - held));
    int64_t before = vidi_kv_pool_free_blocks(pool);
    CHECK(vidi_kv_seq_truncate(seq[2], 8, &err) == VIDI_OK, "truncate: %s", err.msg);
    CHECK(vidi_kv_pool_free_blocks(pool) == before + vidi_kv_pool_blocks_for(pool, plen[2] + LEAVE_AT) - 2,
          "truncate to 8 tokens kept %lld free blocks", (long long)vidi_kv_pool_free_blocks(pool));
    CHECK(vidi_kv_seq_truncate(seq[2], 9, &err) == VIDI_ERR_INVALID, "truncate past the end accepted");

    /* Several rows of one sequence in a step (speculative verification):
     * sequence 0's next token and sequence 1's next three, each row equal to
     * the reference's decode steps one at a time; then cut back. */
    {
        const int32_t rid[4] = {7, 11, 13, 17};
        vidi_kv_seq *rs4[4] = {seq[0], seq[1], seq[1], seq[1]};
        int32_t rpos[12];
        int64_t l0 = vidi_kv_seq_len(seq[0]), l1 = vidi_kv_seq_len(seq[1]);
        text_pos(rpos, l0, 1);
        text_pos(rpos + 3, l1, 3);
        vidi_tensor tl = vidi_tensor_2d(be->act_dtype, lg, 4, V);
        float *rows = malloc((size_t)(4 * V) * sizeof *rows);
        if (!rows || vidi_text_decode_batch(t, pool, 4, rs4, rid, rpos, &tl, 1, &err) != VIDI_OK ||
            vidi_download_f32(be, rows, lg, (size_t)(4 * V), &err) != VIDI_OK) {
            CHECK(0, "rows of one sequence: %s", rows ? err.msg : "out of memory");
            free(rows);
            goto done;
        }
        CHECK(vidi_kv_seq_len(seq[0]) == l0 + 1 && vidi_kv_seq_len(seq[1]) == l1 + 3,
              "rows of one sequence: lengths %lld, %lld", (long long)vidi_kv_seq_len(seq[0]),
              (long long)vidi_kv_seq_len(seq[1]));
        vidi_tensor t1 = vidi_tensor_2d(be->act_dtype, lg, 1, V);
        for (int r = 0; r < 4; r++) {
            int s = r == 0 ? 0 : 1;
            if (vidi_text_decode_step(t, kv[s], rid[r], rpos + 3 * r, &t1, 0, &err) != VIDI_OK ||
                vidi_download_f32(be, got, lg, (size_t)V, &err) != VIDI_OK) {
                CHECK(0, "reference decode: %s", err.msg);
                free(rows);
                goto done;
            }
            char what[80];
            snprintf(what, sizeof what, "%s step row %d (sequence %d)", rel, r, s);
            compare(what, rows + (size_t)r * V, got, V);
        }
        CHECK(vidi_kv_seq_truncate(seq[0], l0, &err) == VIDI_OK && vidi_kv_seq_truncate(seq[1], l1, &err) == VIDI_OK,
              "cut back: %s", err.msg);
        /* the same rows in another order (vidi_text_decode_rows), the last token of sequence 1 from
         * backend memory: each row's logits equal the batch's */
        {
            static const int perm[4] = {2, 0, 1, 3}; /* row r of this step is row perm[r] above */
            vidi_kv_seq *ps[4];
            int32_t pid[4], poff[4], ppos[12];
            for (int r = 0; r < 4; r++) {
                int q = perm[r];
                ps[r] = rs4[q], pid[r] = q == 3 ? 0 : rid[q], poff[r] = q == 0 ? 0 : q - 1;
                memcpy(ppos + 3 * r, rpos + 3 * q, 3 * sizeof *ppos);
            }
            int32_t *dsrc = be->ops->buf_alloc(be, sizeof(int32_t));
            vidi_dev_ids dv = {3, dsrc, 1};
            float *prow = malloc((size_t)V * sizeof *prow);
            if (!dsrc || !prow || be->ops->copy_to_device(be, dsrc, &rid[3], sizeof rid[3], &err) != VIDI_OK ||
                vidi_text_decode_rows(t, pool, 4, ps, poff, pid, ppos, &dv, 1, &tl, &err) != VIDI_OK) {
                CHECK(0, "rows in any order: %s", dsrc && prow ? err.msg : "out of memory");
            } else {
                CHECK(vidi_kv_seq_len(seq[0]) == l0 + 1 && vidi_kv_seq_len(seq[1]) == l1 + 3,
                      "rows in any order: lengths %lld, %lld", (long long)vidi_kv_seq_len(seq[0]),
                      (long long)vidi_kv_seq_len(seq[1]));
                for (int r = 0; r < 4; r++) {
                    if (vidi_download_f32(be, prow, (char *)lg + (size_t)r * V * vidi_dtype_size(be->act_dtype),
                                          (size_t)V, &err) != VIDI_OK)
                        break;
                    char what[80];
                    snprintf(what, sizeof what, "%s rows in any order, row %d", rel, r);
                    compare(what, prow, rows + (size_t)perm[r] * V, V);
                }
                CHECK(vidi_kv_seq_truncate(seq[0], l0, &err) == VIDI_OK &&
                          vidi_kv_seq_truncate(seq[1], l1, &err) == VIDI_OK, "cut back: %s", err.msg);
                /* a sequence's offsets twice, or past its rows: refused, nothing appended */
                poff[0] = poff[2];
                CHECK(vidi_text_decode_rows(t, pool, 4, ps, poff, pid, ppos, NULL, 0, &tl, &err) == VIDI_ERR_INVALID &&
                          strstr(err.msg, "offset"), "a repeated offset accepted (%s)", err.msg);
                poff[0] = 3;
                CHECK(vidi_text_decode_rows(t, pool, 4, ps, poff, pid, ppos, NULL, 0, &tl, &err) == VIDI_ERR_INVALID,
                      "an offset past the sequence's rows accepted");
                CHECK(vidi_kv_seq_len(seq[0]) == l0 && vidi_kv_seq_len(seq[1]) == l1,
                      "a refused step changed a sequence");
            }
            free(prow);
            if (dsrc) be->ops->buf_free(be, dsrc);
        }
        free(rows);
    }

    /* Bad arguments leave every sequence as it was. */
    {
        vidi_tensor tl = vidi_tensor_2d(be->act_dtype, lg, 3, V);
        int32_t bid[3] = {1, 2, 3}, bpos[9] = {0};
        vidi_kv_seq *dup[3] = {seq[0], seq[1], seq[0]};
        int64_t l0 = vidi_kv_seq_len(seq[0]);
        CHECK(vidi_text_decode_batch(t, pool, 3, dup, bid, bpos, &tl, 1, &err) == VIDI_ERR_INVALID &&
                  strstr(err.msg, "consecutive"), "a sequence's rows apart in one step accepted (%s)", err.msg);
        CHECK(vidi_text_decode_batch(t, pool, 0, seq, bid, bpos, &tl, 1, &err) == VIDI_ERR_INVALID,
              "an empty step accepted");
        CHECK(vidi_text_decode_batch(t, pool, 5, seq, bid, bpos, &tl, 1, &err) == VIDI_ERR_INVALID,
              "a step over max_batch accepted");
        bid[1] = (int32_t)V;
        tl = vidi_tensor_2d(be->act_dtype, lg, 2, V);
        CHECK(vidi_text_decode_batch(t, pool, 2, seq, bid, bpos, &tl, 1, &err) == VIDI_ERR_INVALID &&
                  strstr(err.msg, "vocabulary"), "a token outside the vocabulary: %s", err.msg);
        CHECK(vidi_kv_seq_len(seq[0]) == l0, "a refused step changed a sequence");
    }
    for (int s = 0; s < N_SEQ; s++) {
        vidi_kv_seq_free(seq[s]);
        seq[s] = NULL;
    }
    CHECK(vidi_kv_pool_free_blocks(pool) == 64, "blocks lost: %lld of 64 free after every sequence",
          (long long)vidi_kv_pool_free_blocks(pool));

    /* An exhausted pool: 64 tokens fit (16 blocks of 4), the pool's cap. */
    {
        vidi_kv_seq *a = NULL, *b = NULL;
        vidi_kv_pool *small = NULL;
        vidi_kv_pool_params pp = {.block_size = 4, .n_blocks = 5, .max_seq_len = 64, .max_batch = 2};
        if (vidi_kv_pool_create(t, &pp, &small, &err) != VIDI_OK || vidi_kv_seq_create(small, &a, &err) ||
            vidi_kv_seq_create(small, &b, &err)) {
            CHECK(0, "small pool: %s", err.msg);
        } else {
            vidi_tensor te = vidi_tensor_2d(be->act_dtype, emb, 21, H);
            vidi_text_out none = {.which = VIDI_TEXT_LOGITS_NONE};
            text_pos(pos, 0, 21);
            CHECK(vidi_text_forward_paged(t, a, &te, pos, &none, &err) == VIDI_ERR_RANGE &&
                      strstr(err.msg, "exhausted"), "21 tokens in 20 slots: %s", err.msg);
            CHECK(vidi_kv_seq_len(a) == 0 && vidi_kv_pool_free_blocks(small) == 5,
                  "a refused prompt took tokens or blocks");
            te.shape[0] = 20;
            CHECK(vidi_text_forward_paged(t, a, &te, pos, &none, &err) == VIDI_OK, "20 tokens: %s", err.msg);
            vidi_tensor tl = vidi_tensor_2d(be->act_dtype, lg, 2, V);
            int32_t bid[2] = {1, 2}, bpos[6] = {20, 20, 20, 0, 0, 0};
            vidi_kv_seq *both[2] = {a, b};
            CHECK(vidi_text_decode_batch(t, small, 2, both, bid, bpos, &tl, 1, &err) == VIDI_ERR_RANGE,
                  "a step with no free block accepted");
            CHECK(vidi_kv_seq_len(a) == 20 && vidi_kv_seq_len(b) == 0, "a refused step appended tokens");
        }
        vidi_kv_seq_free(a);
        vidi_kv_seq_free(b);
        vidi_kv_pool_free(small);
    }

done:
    for (int s = 0; s < N_SEQ; s++) {
        vidi_kv_seq_free(seq[s]);
        vidi_kv_cache_free(kv[s]);
    }
    vidi_kv_pool_free(pool);
    if (emb) be->ops->buf_free(be, emb);
    if (lg) be->ops->buf_free(be, lg);
    free(ref);
    free(got);
    free(ids);
    free(pos);
    vidi_model_free(m);
}

/* ---- KV hand-off ---- */

enum { HO_PROMPT = 37, HO_CUT = 13, HO_STEPS = 8 };

/* n floats of checkpoint tensor `name` (any float dtype) in *out (malloc). */
static int ck_f32(const vidi_checkpoint *ck, const char *name, float **out, int64_t *n) {
    vidi_err err;
    vidi_tensor w;
    *out = NULL;
    if (vidi_checkpoint_get(ck, name, 0, NULL, &w, &err) != VIDI_OK) {
        CHECK(0, "%s: %s", name, err.msg);
        return 0;
    }
    *n = vidi_tensor_numel(&w);
    *out = malloc((size_t)*n * sizeof **out);
    if (!*out) {
        CHECK(0, "out of memory");
        return 0;
    }
    vidi_convert_to_f32(w.dtype, w.data, *out, (size_t)*n);
    return 1;
}

/* Layer 0 of an export of tokens ids[0 .. n) from position 0: V of every
 * token and K of token 0 (position 0: rotary is the identity) must be the
 * projections of the normalised embeddings, k_proj / v_proj with bias. */
static void check_layer0(const vidi_model *m, const int32_t *ids, int64_t n, const void *host) {
    const vidi_text_config *c = &m->cfg.text;
    const int64_t H = c->hidden_size, C = (int64_t)c->num_kv_heads * c->head_dim;
    vidi_dtype dt = m->be->act_dtype;
    float *emb = NULL, *ln = NULL, *wk = NULL, *bk = NULL, *wv = NULL, *bv = NULL, *got = NULL, *h = NULL;
    float *want = NULL;
    int64_t ne, nl, nwk, nbk, nwv, nbv;
    if (!ck_f32(m->ck, "model.embed_tokens.weight", &emb, &ne) ||
        !ck_f32(m->ck, "model.layers.0.input_layernorm.weight", &ln, &nl) ||
        !ck_f32(m->ck, "model.layers.0.self_attn.k_proj.weight", &wk, &nwk) ||
        !ck_f32(m->ck, "model.layers.0.self_attn.k_proj.bias", &bk, &nbk) ||
        !ck_f32(m->ck, "model.layers.0.self_attn.v_proj.weight", &wv, &nwv) ||
        !ck_f32(m->ck, "model.layers.0.self_attn.v_proj.bias", &bv, &nbv))
        goto done;
    CHECK(nl == H && nwk == C * H && nbk == C && nwv == C * H && nbv == C, "layer 0 shapes");
    got = malloc((size_t)(2 * n * C) * sizeof *got);
    h = malloc((size_t)H * sizeof *h);
    want = malloc((size_t)(n + 1) * (size_t)C * sizeof *want);
    if (!got || !h || !want) {
        CHECK(0, "out of memory");
        goto done;
    }
    /* layer 0: K [n, C] then V [n, C] */
    vidi_convert_to_f32(dt, host, got, (size_t)(2 * n * C));
    /* want rows 0 .. n-1: V of each token; row n: K of token 0 */
    for (int64_t j = 0; j < n; j++) {
        const float *x = emb + (size_t)ids[j] * H;
        double ss = 0;
        for (int64_t i = 0; i < H; i++) ss += (double)x[i] * x[i];
        double r = 1.0 / sqrt(ss / H + c->rms_norm_eps);
        for (int64_t i = 0; i < H; i++) h[i] = (float)(x[i] * r) * ln[i];
        for (int pass = 0; pass < (j == 0 ? 2 : 1); pass++) {
            const float *w = pass ? wk : wv, *b = pass ? bk : bv;
            float *o = want + (size_t)(pass ? n : j) * C;
            for (int64_t r2 = 0; r2 < C; r2++) {
                double acc = b[r2];
                for (int64_t i = 0; i < H; i++) acc += (double)w[r2 * H + i] * h[i];
                o[r2] = (float)acc;
            }
        }
    }
    compare("layer 0 V of every exported token", got + n * C, want, n * C);
    compare("layer 0 K of exported token 0", got, want + n * C, C);
done:
    free(emb);
    free(ln);
    free(wk);
    free(bk);
    free(wv);
    free(bv);
    free(got);
    free(h);
    free(want);
}

/* Rows [start, start + n) of every plane of a full export (tokens `total`)
 * equal the export of that sub-range. */
static int same_slices(const char *full, int64_t total, const char *part, int64_t start, int64_t n, int planes,
                       size_t row) {
    for (int p = 0; p < planes; p++)
        if (memcmp(full + ((size_t)p * total + start) * row, part + (size_t)p * n * row, (size_t)n * row))
            return 0;
    return 1;
}

/* Logits of two sides of a hand-off: bitwise on the CPU (same kernels, same
 * order; the keys are read in token order whatever the block size). */
static int same_logits(const char *what, const float *got, const float *ref, int64_t V) {
    if (g_cuda) return compare(what, got, ref, V);
    int ok = !memcmp(got, ref, (size_t)V * sizeof *got);
    CHECK(ok, "%s: logits differ", what);
    return ok;
}

static void run_handoff(const char *rel) {
    vidi_err err;
    vidi_model *m = NULL;
    vidi_kv_pool *pa = NULL, *pb = NULL, *small = NULL, *shortp = NULL;
    vidi_kv_seq *sa = NULL, *sb = NULL, *sc = NULL, *sx = NULL, *sy = NULL;
    void *emb = NULL, *lg = NULL;
    char *full = NULL, *again = NULL, *head = NULL, *tail = NULL;
    float *la = NULL, *lx = NULL;
    int32_t ids[HO_PROMPT], pos[3 * HO_PROMPT];
    vidi_backend *be = g_be;

    REQUIRE(vidi_model_load(test_data_path(rel), be, &m, &err) == VIDI_OK, "%s: load: %s", rel, err.msg);
    vidi_text *t = m->text;
    const vidi_text_config *c = &m->cfg.text;
    int64_t H = vidi_text_hidden_size(t), V = vidi_text_vocab_size(t);
    size_t es = vidi_dtype_size(be->act_dtype);
    const int P = HO_PROMPT, planes = 2 * c->num_layers;
    size_t row = (size_t)c->num_kv_heads * (size_t)c->head_dim * es;
    size_t bytes = (size_t)planes * P * row;

    vidi_kv_pool_params ppa = {.block_size = 16, .n_blocks = 8, .max_seq_len = 128, .max_batch = 1};
    vidi_kv_pool_params ppb = {.block_size = 8, .n_blocks = 32, .max_seq_len = 128, .max_batch = 1};
    if (vidi_kv_pool_create(t, &ppa, &pa, &err) || vidi_kv_pool_create(t, &ppb, &pb, &err) ||
        vidi_kv_seq_create(pa, &sa, &err) || vidi_kv_seq_create(pb, &sb, &err) ||
        vidi_kv_seq_create(pb, &sc, &err)) {
        CHECK(0, "pools: %s", err.msg);
        goto done;
    }
    emb = be->ops->buf_alloc(be, (size_t)(P * H) * es);
    lg = be->ops->buf_alloc(be, (size_t)V * es);
    full = malloc(bytes);
    again = malloc(bytes);
    head = malloc(vidi_kv_seq_export_bytes(pa, HO_CUT));
    tail = malloc(vidi_kv_seq_export_bytes(pa, P - HO_CUT));
    la = malloc((size_t)V * sizeof *la);
    lx = malloc((size_t)V * sizeof *lx);
    if (!emb || !lg || !full || !again || !head || !tail || !la || !lx) {
        CHECK(0, "out of memory");
        goto done;
    }

    /* The shape a receiver checks, and the byte count of the layout. */
    int layers = -1, kv_heads = -1, head_dim = -1;
    vidi_kv_pool_layout(pb, &layers, &kv_heads, &head_dim);
    CHECK(layers == c->num_layers && kv_heads == c->num_kv_heads && head_dim == c->head_dim,
          "layout %d x %d x %d", layers, kv_heads, head_dim);
    CHECK(vidi_kv_pool_dtype(pa) == be->act_dtype, "pool dtype %s", vidi_dtype_name(vidi_kv_pool_dtype(pa)));
    CHECK(vidi_kv_seq_export_bytes(pa, P) == bytes && vidi_kv_seq_export_bytes(pb, P) == bytes &&
              vidi_kv_seq_export_bytes(pa, 0) == 0, "export bytes %zu, want %zu",
          vidi_kv_seq_export_bytes(pa, P), bytes);

    /* Prefill the prompt into pool A. */
    unsigned long long rs = 777;
    for (int i = 0; i < P; i++) {
        rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)((rs >> 33) % (unsigned long long)(V < 200 ? V : 200));
    }
    text_pos(pos, 0, P);
    vidi_tensor te = vidi_tensor_2d(be->act_dtype, emb, P, H);
    vidi_tensor tl = vidi_tensor_2d(be->act_dtype, lg, 1, V);
    vidi_text_out o = {.which = VIDI_TEXT_LOGITS_LAST, .logits = &tl};
    if (vidi_text_embed(t, ids, P, NULL, &te, &err) || vidi_text_forward_paged(t, sa, &te, pos, &o, &err) ||
        vidi_download_f32(be, la, lg, (size_t)V, &err)) {
        CHECK(0, "prefill: %s", err.msg);
        goto done;
    }
    int32_t tok = argmax(la, V);

    /* Everything into B (8-token blocks): B's own export is the same bytes. */
    if (vidi_kv_seq_export(sa, 0, P, full, bytes, &err) != VIDI_OK) {
        CHECK(0, "export: %s", err.msg);
        goto done;
    }
    check_layer0(m, ids, P, full);
    if (vidi_kv_seq_import(sb, full, bytes, P, &err) != VIDI_OK) {
        CHECK(0, "import: %s", err.msg);
        goto done;
    }
    CHECK(vidi_kv_seq_len(sb) == P, "imported sequence holds %lld tokens", (long long)vidi_kv_seq_len(sb));
    CHECK(vidi_kv_pool_free_blocks(pb) == 32 - vidi_kv_pool_blocks_for(pb, P), "pool B has %lld free blocks",
          (long long)vidi_kv_pool_free_blocks(pb));
    memset(again, 0, bytes);
    CHECK(vidi_kv_seq_export(sb, 0, P, again, bytes, &err) == VIDI_OK, "export from B: %s", err.msg);
    CHECK(!memcmp(again, full, bytes), "pool B's export differs from pool A's");

    /* The same through backend memory (the CUDA IPC path): export_dev
     * writes the host export's bytes, import_dev of them rebuilds it. */
    {
        vidi_kv_seq *sd = NULL;
        void *dbuf = be->ops->buf_alloc(be, bytes);
        vidi_status st = dbuf ? vidi_kv_seq_export_dev(sa, 0, P, dbuf, bytes, &err) : VIDI_ERR_NOMEM;
        memset(again, 0, bytes);
        if (st == VIDI_OK) st = be->ops->copy_to_host(be, again, dbuf, bytes, &err);
        CHECK(st == VIDI_OK && !memcmp(again, full, bytes), "export_dev differs from export: %s", err.msg);
        if (st == VIDI_OK) st = vidi_kv_seq_create(pb, &sd, &err);
        if (st == VIDI_OK) st = vidi_kv_seq_import_dev(sd, dbuf, bytes, P, &err);
        memset(again, 0, bytes);
        if (st == VIDI_OK) st = vidi_kv_seq_export(sd, 0, P, again, bytes, &err);
        CHECK(st == VIDI_OK && !memcmp(again, full, bytes), "import_dev did not rebuild the sequence: %s", err.msg);
        CHECK(vidi_kv_seq_import_dev(sd, dbuf, bytes - 1, P, &err) == VIDI_ERR_INVALID, "a short import_dev accepted");
        vidi_kv_seq_free(sd);
        if (dbuf) be->ops->buf_free(be, dbuf);
    }

    /* Sub-ranges: [0, 13) and [13, 37) are the rows of the full export, and
     * imported one after the other they rebuild the sequence. */
    size_t hb = vidi_kv_seq_export_bytes(pa, HO_CUT), tb = vidi_kv_seq_export_bytes(pa, P - HO_CUT);
    if (vidi_kv_seq_export(sa, 0, HO_CUT, head, hb, &err) ||
        vidi_kv_seq_export(sa, HO_CUT, P - HO_CUT, tail, tb, &err)) {
        CHECK(0, "sub-range export: %s", err.msg);
        goto done;
    }
    CHECK(same_slices(full, P, head, 0, HO_CUT, planes, row), "tokens [0, %d) are not the full export's",
          HO_CUT);
    CHECK(same_slices(full, P, tail, HO_CUT, P - HO_CUT, planes, row), "tokens [%d, %d) are not the full "
          "export's", HO_CUT, P);
    if (vidi_kv_seq_import(sc, head, hb, HO_CUT, &err) || vidi_kv_seq_import(sc, tail, tb, P - HO_CUT, &err)) {
        CHECK(0, "sub-range import: %s", err.msg);
        goto done;
    }
    CHECK(vidi_kv_seq_len(sc) == P, "rebuilt sequence holds %lld tokens", (long long)vidi_kv_seq_len(sc));
    memset(again, 0, bytes);
    CHECK(vidi_kv_seq_export(sc, 0, P, again, bytes, &err) == VIDI_OK, "export of the rebuilt: %s", err.msg);
    CHECK(!memcmp(again, full, bytes), "the rebuilt sequence's export differs from pool A's");

    /* Greedy decode on every side: the same logits, so the same tokens. */
    int32_t tx[2] = {tok, tok};
    vidi_kv_seq *other[2] = {sb, sc};
    for (int k = 1; k <= HO_STEPS; k++) {
        int32_t p3[3];
        text_pos(p3, P + k - 1, 1);
        if (vidi_text_decode_batch(t, pa, 1, &sa, &tok, p3, &tl, 1, &err) ||
            vidi_download_f32(be, la, lg, (size_t)V, &err)) {
            CHECK(0, "decode A, step %d: %s", k, err.msg);
            goto done;
        }
        tok = argmax(la, V);
        for (int x = 0; x < 2; x++) {
            if (vidi_text_decode_batch(t, pb, 1, &other[x], &tx[x], p3, &tl, 1, &err) ||
                vidi_download_f32(be, lx, lg, (size_t)V, &err)) {
                CHECK(0, "decode %s, step %d: %s", x ? "rebuilt" : "imported", k, err.msg);
                goto done;
            }
            char what[96];
            snprintf(what, sizeof what, "%s %s step %d", rel, x ? "rebuilt" : "imported", k);
            if (!same_logits(what, lx, la, V)) goto done;
            tx[x] = argmax(lx, V);
            CHECK(tx[x] == tok, "%s: token %d, pool A chose %d", what, tx[x], tok);
        }
    }

    /* Refused exports: a range past the end, bad bytes; nothing changes. */
    const int64_t la_len = vidi_kv_seq_len(sa);
    CHECK(la_len == P + HO_STEPS, "pool A's sequence holds %lld tokens", (long long)la_len);
    CHECK(vidi_kv_seq_export(sa, la_len - 4, 5, head, vidi_kv_seq_export_bytes(pa, 5), &err) == VIDI_ERR_INVALID,
          "an export past the end accepted");
    CHECK(vidi_kv_seq_export(sa, -1, 2, head, vidi_kv_seq_export_bytes(pa, 2), &err) == VIDI_ERR_INVALID,
          "an export from -1 accepted");
    CHECK(vidi_kv_seq_export(sa, la_len + 1, 0, head, 0, &err) == VIDI_ERR_INVALID,
          "an empty export past the end accepted");
    CHECK(vidi_kv_seq_export(sa, 0, HO_CUT, head, hb - 1, &err) == VIDI_ERR_INVALID,
          "an export into a short buffer accepted");
    CHECK(vidi_kv_seq_export(sa, 0, 0, NULL, 0, &err) == VIDI_OK, "an empty export: %s", err.msg);
    CHECK(vidi_kv_seq_len(sa) == la_len, "exports changed the sequence");

    /* Refused imports: too few free blocks, past max_seq_len, bad bytes. */
    {
        vidi_kv_pool_params pps = {.block_size = 8, .n_blocks = 4, .max_seq_len = 128, .max_batch = 1};
        vidi_kv_pool_params ppt = {.block_size = 8, .n_blocks = 32, .max_seq_len = P - 1, .max_batch = 1};
        if (vidi_kv_pool_create(t, &pps, &small, &err) || vidi_kv_pool_create(t, &ppt, &shortp, &err) ||
            vidi_kv_seq_create(small, &sx, &err) || vidi_kv_seq_create(shortp, &sy, &err)) {
            CHECK(0, "small pools: %s", err.msg);
            goto done;
        }
        CHECK(vidi_kv_seq_import(sx, full, bytes, P, &err) == VIDI_ERR_RANGE && strstr(err.msg, "exhausted"),
              "37 tokens into 32 slots: %s", err.msg);
        CHECK(vidi_kv_seq_len(sx) == 0 && vidi_kv_pool_free_blocks(small) == 4,
              "a refused import took tokens or blocks");
        CHECK(vidi_kv_seq_import(sx, head, hb, HO_CUT, &err) == VIDI_OK, "13 tokens: %s", err.msg);
        CHECK(vidi_kv_seq_import(sx, tail, tb, P - HO_CUT, &err) == VIDI_ERR_RANGE,
              "24 more tokens into 19 slots accepted");
        CHECK(vidi_kv_seq_len(sx) == HO_CUT && vidi_kv_pool_free_blocks(small) == 2,
              "a refused import after a prefix: %lld tokens, %lld free blocks", (long long)vidi_kv_seq_len(sx),
              (long long)vidi_kv_pool_free_blocks(small));
        CHECK(vidi_kv_seq_import(sy, full, bytes, P, &err) == VIDI_ERR_RANGE && strstr(err.msg, "max_seq_len"),
              "37 tokens past max_seq_len 36: %s", err.msg);
        CHECK(vidi_kv_seq_len(sy) == 0 && vidi_kv_pool_free_blocks(shortp) == 32,
              "a refused import took tokens or blocks");
        CHECK(vidi_kv_seq_import(sy, full, bytes - 1, P, &err) == VIDI_ERR_INVALID,
              "an import of the wrong size accepted");
        CHECK(vidi_kv_seq_import(sy, full, bytes, P - 1, &err) == VIDI_ERR_INVALID,
              "an import of the wrong count accepted");
        CHECK(vidi_kv_seq_import(sy, NULL, 0, 0, &err) == VIDI_OK, "an empty import: %s", err.msg);
        CHECK(vidi_kv_seq_len(sy) == 0 && vidi_kv_pool_free_blocks(shortp) == 32, "a refused import took tokens or "
              "blocks");
    }

done:
    vidi_kv_seq_free(sa);
    vidi_kv_seq_free(sb);
    vidi_kv_seq_free(sc);
    vidi_kv_seq_free(sx);
    vidi_kv_seq_free(sy);
    vidi_kv_pool_free(pa);
    vidi_kv_pool_free(pb);
    vidi_kv_pool_free(small);
    vidi_kv_pool_free(shortp);
    if (emb) be->ops->buf_free(be, emb);
    if (lg) be->ops->buf_free(be, lg);
    free(full);
    free(again);
    free(head);
    free(tail);
    free(la);
    free(lx);
    vidi_model_free(m);
}

static void test_qwen2vl(void) { run_model("models/tiny-qwen2vl"); }
static void test_qwen25vl(void) { run_model("models/tiny-qwen25vl"); }

/* The CPU backend told its memory is not the host's: weights are copied at
 * load as on a GPU, so the text model fuses q/k/v (qkv_rope_store) in its
 * decode steps and chunked prefill, checked against the same references. */
static void run_copied(void (*run)(const char *rel), const char *rel) {
    if (g_cuda) {
        printf("  (the CUDA backend copies weights anyway)\n");
        return;
    }
    g_be->host_memory = 0;
    g_be->weight_dtype = VIDI_DTYPE_F32;
    run(rel);
    g_be->host_memory = 1;
}
static void test_qwen2vl_copied(void) { run_copied(run_model, "models/tiny-qwen2vl"); }
static void test_qwen25vl_copied(void) { run_copied(run_model, "models/tiny-qwen25vl"); }
static void test_qwen2vl_handoff(void) { run_handoff("models/tiny-qwen2vl"); }
static void test_qwen25vl_handoff(void) { run_handoff("models/tiny-qwen25vl"); }
static void test_qwen25vl_handoff_copied(void) { run_copied(run_handoff, "models/tiny-qwen25vl"); }

int main(int argc, char **argv) {
    vidi_err err;
    const char *want = getenv("VIDI_TEST_BACKEND");
    if (want && !strcmp(want, "cuda")) {
#ifdef VIDI_HAVE_CUDA
        g_be = vidi_backend_cuda_create(0, &err);
        if (!g_be) {
            printf("skipped: no CUDA device (%s)\n", err.msg);
            return 77;
        }
        g_cuda = 1;
#else
        printf("skipped: built without CUDA\n");
        return 77;
#endif
    } else {
        g_be = vidi_backend_cpu_create(0, &err);
        if (!g_be) {
            printf("cpu backend: %s\n", err.msg);
            return 1;
        }
    }
    static const test_case cases[] = {
        {"qwen2vl", test_qwen2vl},
        {"qwen25vl", test_qwen25vl},
        {"qwen2vl_copied", test_qwen2vl_copied},
        {"qwen25vl_copied", test_qwen25vl_copied},
        {"qwen2vl_handoff", test_qwen2vl_handoff},
        {"qwen25vl_handoff", test_qwen25vl_handoff},
        {"qwen25vl_handoff_copied", test_qwen25vl_handoff_copied},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    g_be->ops->destroy(g_be);
    return rc;
}
