/* tests/gpu/test_gpu_parity.c <case dir> — one reference case of
 * tools/golden on the CUDA backend (device 0): the checks of
 * tests/parity/test_parity.c, which this file includes, under bf16
 * tolerances:
 *   - M-RoPE positions and the tokenizer (backend-independent, exact);
 *   - vision embeddings of every media item against the reference's;
 *   - prompt logits (reference vision embeddings scattered in) at
 *     logits_positions and at the last position, and the first logits of
 *     vidi_generate with the reference's and with our vision embeddings;
 *   - 32 greedy tokens equal to the reference's, or the first difference a
 *     near-tie by the reference's greedy_top2_gaps;
 *   - chunked prefill against one-shot, and a prompt that does not fit the KV
 *     cache is a clean VIDI_ERR_RANGE;
 *   - decode replayed as a CUDA graph against the plain path: bit-equal
 *     logits at every step and equal tokens (same kernels), and
 *     vidi_generate with and without graphs giving the same tokens.
 * Tolerances (bf16 weights and activations, fp32 accumulation; bf16 keeps 8
 * significant bits): logits and vision embeddings max|ours - ref| <=
 * 5e-2 * max|ref| + 2e-2; a greedy divergence is accepted where the
 * reference's top-2 gap is below 0.1 and our two logits are as close (give
 * or take twice the logit tolerance); chunked prefill's first logits within
 * 5e-2 * max|one-shot| + 2e-2 of one-shot's (its tokens are reported, not
 * required equal: bf16 rounding differs with the chunking).
 * Exit 77 when there is no CUDA device or the reference data are missing.
 */
#define PARITY_NO_MAIN
#include "../parity/test_parity.c"

#include "kernels/cuda/cuda_info.h"

static const parity_profile PROFILE_CUDA = {
    .name = "cuda",
    .logits = {5e-2, 2e-2},
    .e2e = {5e-2, 2e-2},
    .vision = {5e-2, 2e-2},
    .near_tie = 0.1,
    .chunk = {5e-2, 2e-2},
    .chunk_tokens_equal = 0,
};

/* Greedy decode of the prompt (text embeddings only) on two KV caches, one
 * stepping with graphs and one without: logits must be bit-equal. */
static void check_graph_decode(const pcase *c, vidi_backend *be) {
    vidi_model *m = NULL;
    vidi_err err;
    vidi_kv_cache *kv[2] = {NULL, NULL};
    void *emb = NULL, *lg[2] = {NULL, NULL};
    uint16_t *h[2] = {NULL, NULL};
    int32_t *pos = NULL;
    vidi_generate_result r0 = {0}, r1 = {0};
    enum { STEPS = 24 };
    if (!be->ops->graph_begin) {
        printf("  graph decode: the backend has no graphs\n");
        return;
    }
    if (vidi_model_load(c->model_dir, be, &m, &err) != VIDI_OK) {
        CHECK(0, "graph decode: load: %s", err.msg);
        return;
    }
    int64_t L = c->input_ids.shape[0], H = m->cfg.text.hidden_size, V = m->cfg.text.vocab_size;
    size_t es = vidi_dtype_size(be->act_dtype), lb = (size_t)V * es;
    pos = malloc((size_t)L * 3 * sizeof *pos);
    emb = be->ops->buf_alloc(be, (size_t)(L * H) * es);
    for (int i = 0; i < 2; i++) {
        lg[i] = be->ops->buf_alloc(be, lb);
        h[i] = malloc(lb);
    }
    if (!pos || !emb || !lg[0] || !lg[1] || !h[0] || !h[1]) {
        CHECK(0, "graph decode: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < L * 3; i++) pos[i] = (int32_t)(i / 3);
    vidi_tensor te = vidi_tensor_2d(be->act_dtype, emb, L, H);
    if (vidi_text_embed(m->text, c->input_ids.data, L, NULL, &te, &err) != VIDI_OK) {
        CHECK(0, "graph decode: embed: %s", err.msg);
        goto done;
    }
    vidi_tensor tl[2];
    for (int i = 0; i < 2; i++) {
        tl[i] = vidi_tensor_2d(be->act_dtype, lg[i], 1, V);
        vidi_text_out o = {.which = VIDI_TEXT_LOGITS_LAST, .logits = &tl[i]};
        if (vidi_kv_cache_create(m->text, L + STEPS, &kv[i], &err) != VIDI_OK ||
            vidi_text_forward(m->text, kv[i], &te, pos, &o, &err) != VIDI_OK) {
            CHECK(0, "graph decode: prefill: %s", err.msg);
            goto done;
        }
    }
    int bad = -1;
    for (int s = 0; s < STEPS; s++) {
        for (int i = 0; i < 2; i++)
            if (be->ops->copy_to_host(be, h[i], lg[i], lb, &err) != VIDI_OK) {
                CHECK(0, "graph decode: download: %s", err.msg);
                goto done;
            }
        if (memcmp(h[0], h[1], lb) && bad < 0) bad = s;
        if (s == STEPS - 1) break;
        /* argmax of the graph side's logits (bf16 or f32 bits compared as floats) */
        float best = -INFINITY;
        int32_t tok = 0;
        for (int64_t j = 0; j < V; j++) {
            float f;
            if (es == 2) {
                uint32_t u = (uint32_t)h[0][j] << 16;
                memcpy(&f, &u, 4);
            } else {
                f = ((const float *)h[0])[j];
            }
            if (f > best) best = f, tok = (int32_t)j;
        }
        int32_t p3[3] = {(int32_t)(L + s), (int32_t)(L + s), (int32_t)(L + s)};
        for (int i = 0; i < 2; i++)
            if (vidi_text_decode_step(m->text, kv[i], tok, p3, &tl[i], i == 0, &err) != VIDI_OK) {
                CHECK(0, "graph decode: step %d (%s): %s", s, i == 0 ? "graph" : "plain", err.msg);
                goto done;
            }
    }
    printf("  graph decode: %d steps, logits %s\n", STEPS - 1, bad < 0 ? "bit-equal" : "differ");
    CHECK(bad < 0, "graph decode: logits after step %d differ from the plain path", bad);

    vidi_generate_params gp = vidi_generate_params_default();
    gp.max_tokens = STEPS;
    gp.stop_at_eos = 0;
    int nv = 0;
    for (int64_t i = 0; i < L; i++) {
        int32_t id = ((const int32_t *)c->input_ids.data)[i];
        if (id == m->cfg.image_token_id || id == m->cfg.video_token_id) nv++;
    }
    if (nv == 0) {
        gp.no_graphs = 1;
        vidi_status a = vidi_generate(m, c->input_ids.data, L, NULL, 0, &gp, &r0, &err);
        CHECK(a == VIDI_OK, "generate without graphs: %s", err.msg);
        gp.no_graphs = 0;
        vidi_status b2 = vidi_generate(m, c->input_ids.data, L, NULL, 0, &gp, &r1, &err);
        CHECK(b2 == VIDI_OK, "generate with graphs: %s", err.msg);
        if (a == VIDI_OK && b2 == VIDI_OK) {
            int eq = r0.n_tokens == r1.n_tokens &&
                     !memcmp(r0.tokens, r1.tokens, (size_t)r0.n_tokens * sizeof *r0.tokens);
            printf("  generate with / without graphs: %d tokens, %s\n", r1.n_tokens, eq ? "equal" : "differ");
            CHECK(eq, "generate: tokens with graphs differ from without");
        }
    }
done:
    vidi_generate_result_free(&r0);
    vidi_generate_result_free(&r1);
    for (int i = 0; i < 2; i++) {
        vidi_kv_cache_free(kv[i]);
        if (lg[i]) be->ops->buf_free(be, lg[i]);
        free(h[i]);
    }
    if (emb) be->ops->buf_free(be, emb);
    free(pos);
    vidi_model_free(m);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_gpu_parity <case dir>\n");
        return 2;
    }
    int n_dev = vidi_cuda_device_count();
    if (n_dev == 0) {
        printf("skip: no CUDA device\n");
        return 77;
    }
    static pcase c;
    int r = case_load(&c, argv[1]);
    if (r) {
        case_free(&c);
        return r == 77 ? 77 : 1;
    }
    char dev[256];
    vidi_cuda_device_describe(0, dev, sizeof dev);
    printf("gpu parity %s (%s) on device 0: %s\n", c.name, c.model_dir, dev);
    vidi_err err;
    vidi_backend *be = vidi_backend_cuda_create(0, &err);
    if (!be) {
        CHECK(0, "cuda backend: %s", err.msg);
    } else {
        /* the tolerances above are for bf16; an f32 backend meets them too */
        printf(" activations %s, weights %s\n", vidi_dtype_name(be->act_dtype),
               be->host_memory ? "in host memory" : vidi_dtype_name(be->weight_dtype));
        run_profile(&c, be, &PROFILE_CUDA, 1);
        check_graph_decode(&c, be);
        be->ops->destroy(be);
    }
    printf("%s: %d checks, %d failed\n", c.name, test_checks, test_failures);
    case_free(&c);
    return test_failures ? 1 : 0;
}
