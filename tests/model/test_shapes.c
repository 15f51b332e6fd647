/* tests/model/test_shapes.c MODEL_DIR DATA_DIR REFERENCE MIN_ACCURACY —
 * vidi-shapes answering questions about real files, on the CPU backend
 * (ctest label model).
 *
 * DATA_DIR holds manifest.json (tools/shapes/write_files.py: held-out scenes
 * rendered to .png/.jpg/.mp4/.webm, each with questions and exact answers);
 * REFERENCE (a file name in DATA_DIR) holds tools/train/evaluate.py's
 * transformers greedy answers of the same model to the same questions on the
 * same files. For every scene the
 * file is decoded and preprocessed by media/, the vision tower runs once,
 * and each question is a chat prompt (vidi_prompt_build) answered greedily
 * (at most 24 tokens, stop at <|im_end|>) with those vision embeddings. The
 * answer, special tokens dropped and whitespace trimmed, is compared with
 * the scene's truth and with transformers' answer.
 *
 * Prints per-type accuracy and the line `shapes accuracy: 0.NN (N=...)`.
 * Passes when the overall exact-answer accuracy is >= MIN_ACCURACY and the
 * engine's answers equal transformers' for >= 99 % of the questions. Issue 5
 * asks 0.90 of vidi-shapes; tests/CMakeLists.txt says which floor each
 * shipped model is held to and why.
 * VIDI_SHAPES_LIMIT=N runs the first N scenes only (a quick look; the
 * thresholds still apply).
 *
 * VIDI_SPARSE_CONFIG=FILE prefills every prompt with sparse attention
 * (prefill/sparse_run.h, the per-head patterns of FILE) and prints the share
 * of query-key pairs computed; the floor is then the dense accuracy less a
 * point (ctest test_shapes_sparse), and agreement with transformers is
 * reported, not required (sparse attention is an approximation).
 *
 * VIDI_SHAPES_BACKEND=cuda runs on the CUDA backend (exit 77 without a
 * device; bf16 activations, so agreement with transformers is reported, not
 * required): with VIDI_SPARSE_CONFIG the sparse prefill runs the CUDA
 * kernel over packed plans, and VIDI_SPARSE_DEVICE_MAX_SHARE=X overrides the
 * share of the dense work above which a layer runs dense instead (1: the
 * sparse kernel for every layer, as ctest gpu_shapes_sparse does: these
 * prompts are short, and the default would run them dense).
 */
#include <ctype.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/ops.h"
#include "media/media.h"
#include "model/config.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "model/vision.h"
#include "prefill/sparse_run.h"

#define MAX_TYPES 16

typedef struct type_stat {
    char name[32];
    int right, n;
} type_stat;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static type_stat *stat_for(type_stat *st, int *n_st, const char *name) {
    for (int i = 0; i < *n_st; i++)
        if (!strcmp(st[i].name, name)) return &st[i];
    if (*n_st == MAX_TYPES) return NULL;
    type_stat *s = &st[(*n_st)++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->right = s->n = 0;
    return s;
}

static void trim(char *s) {
    size_t n = strlen(s), a = 0;
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    while (s[a] && isspace((unsigned char)s[a])) a++;
    memmove(s, s + a, n - a + 1);
}

/* transformers' answer to (file, question), or NULL. */
static const char *ref_answer(json_t *answers, const char *file, const char *question) {
    size_t i;
    json_t *r;
    json_array_foreach(answers, i, r) {
        const char *f = json_string_value(json_object_get(r, "file"));
        const char *q = json_string_value(json_object_get(r, "question"));
        if (f && q && !strcmp(f, file) && !strcmp(q, question))
            return json_string_value(json_object_get(r, "answer"));
    }
    return NULL;
}

static int read_file(const char *path, uint8_t **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *data = malloc(n > 0 ? (size_t)n : 1);
    if (!*data || fread(*data, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(*data);
        return -1;
    }
    fclose(f);
    *size = (size_t)n;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: test_shapes MODEL_DIR DATA_DIR REFERENCE_JSON MIN_ACCURACY\n");
        return 2;
    }
    const char *model_dir = argv[1], *data_dir = argv[2], *ref_name = argv[3];
    char *end = NULL;
    double min_acc = strtod(argv[4], &end);
    if (end == argv[4] || *end || !(min_acc >= 0.0 && min_acc <= 1.0)) {
        fprintf(stderr, "test_shapes: MIN_ACCURACY must be a number in [0, 1], not '%s'\n", argv[4]);
        return 2;
    }
    char path[4096];
    vidi_err err;
    json_error_t jerr;
    int rc = 1, limit = 0;
    const char *lim = getenv("VIDI_SHAPES_LIMIT");
    if (lim) limit = atoi(lim);

    snprintf(path, sizeof path, "%s/manifest.json", data_dir);
    json_t *man = json_load_file(path, 0, &jerr);
    snprintf(path, sizeof path, "%s/%s", data_dir, ref_name);
    json_t *refs = json_load_file(path, 0, &jerr);
    json_t *scenes = man ? json_object_get(man, "scenes") : NULL;
    json_t *answers = refs ? json_object_get(refs, "answers") : NULL;
    if (!json_is_array(scenes) || !json_is_array(answers)) {
        fprintf(stderr, "test_shapes: %s: no manifest.json with scenes or %s with answers\n", data_dir, ref_name);
        return 1;
    }

    const char *bname = getenv("VIDI_SHAPES_BACKEND");
    int on_cpu = !bname || !*bname || !strcmp(bname, "cpu");
    vidi_backend *be = NULL;
    if (on_cpu) {
        be = vidi_backend_cpu_create(0, &err);
    } else if (!strcmp(bname, "cuda")) {
#ifdef VIDI_HAVE_CUDA
        be = vidi_backend_cuda_create(0, &err);
#else
        vidi_err_set(&err, VIDI_ERR_UNSUPPORTED, "this build has no CUDA backend");
#endif
        if (!be) {
            printf("skipped: %s\n", err.msg);
            return 77;
        }
    } else {
        fprintf(stderr, "test_shapes: VIDI_SHAPES_BACKEND is cpu or cuda, not '%s'\n", bname);
        return 2;
    }
    vidi_model *m = NULL;
    vidi_tokenizer *tok = NULL;
    vidi_preproc_config pp;
    if (!be || vidi_model_load(model_dir, be, &m, &err) != VIDI_OK ||
        vidi_preproc_config_load(model_dir, &pp, &err) != VIDI_OK) {
        fprintf(stderr, "test_shapes: %s\n", err.msg);
        return 1;
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    if (vidi_tokenizer_load(path, &tok, &err) != VIDI_OK) {
        fprintf(stderr, "test_shapes: %s\n", err.msg);
        return 1;
    }
    const char *sparse_path = getenv("VIDI_SPARSE_CONFIG");
    vidi_sparse_config *sparse = NULL;
    int64_t sp_pairs = 0, sp_dense = 0;
    int sp_fallbacks = 0;
    double sp_ms = 0;
    if (sparse_path && *sparse_path &&
        vidi_sparse_config_load(sparse_path, m->cfg.text.num_layers, m->cfg.text.num_heads, &sparse, &err) != VIDI_OK) {
        fprintf(stderr, "test_shapes: %s\n", err.msg);
        return 1;
    }
    const char *share = getenv("VIDI_SPARSE_DEVICE_MAX_SHARE");
    if (sparse && share && *share) sparse->device_max_share = strtod(share, NULL);
    int sp_dense_layers = 0;

    type_stat st[MAX_TYPES];
    int n_st = 0, n_q = 0, n_right = 0, n_agree = 0, n_ref = 0, n_scenes = 0, failed = 0;
    double t0 = now_s();
    size_t si;
    json_t *sc;
    json_array_foreach(scenes, si, sc) {
        if (limit && (int)si >= limit) break;
        const char *file = json_string_value(json_object_get(sc, "file"));
        const char *kind = json_string_value(json_object_get(sc, "kind"));
        json_t *qs = json_object_get(sc, "questions");
        if (!file || !kind || !json_is_array(qs)) {
            fprintf(stderr, "test_shapes: scene %zu: no file, kind or questions\n", si);
            failed = 1;
            break;
        }
        int is_video = !strcmp(kind, "video");
        uint8_t *data = NULL;
        size_t size = 0;
        vidi_media_item item = {0};
        void *emb = NULL;
        snprintf(path, sizeof path, "%s/%s", data_dir, file);
        vidi_media_limits limits = vidi_media_limits_default();
        vidi_media_options opt = vidi_media_options_default();
        if (read_file(path, &data, &size)) {
            fprintf(stderr, "test_shapes: cannot read %s\n", path);
            failed = 1;
            break;
        }
        vidi_status mrc = is_video ? vidi_media_video_to_item(data, size, &pp, &opt, &limits, &item, &err)
                                   : vidi_media_image_to_item(data, size, &pp, &opt, &limits, &item, &err);
        free(data);
        if (mrc != VIDI_OK) {
            fprintf(stderr, "test_shapes: %s: %s\n", file, err.msg);
            failed = 1;
            break;
        }
        vidi_media med = {.kind = is_video ? VIDI_MEDIA_VIDEO : VIDI_MEDIA_IMAGE, .pixels = item.pixels,
                          .n_rows = item.rows, .second_per_grid_t = (float)item.second_per_grid_t};
        memcpy(med.grid, item.grid, sizeof med.grid);
        int64_t vrows = vidi_vision_out_rows(m->vision, (const int32_t(*)[3])med.grid, 1);
        int64_t vcols = m->cfg.vision.out_hidden_size;
        emb = be->ops->buf_alloc(be, (size_t)(vrows * vcols) * vidi_dtype_size(be->act_dtype));
        vidi_tensor temb = vidi_tensor_2d(be->act_dtype, emb, vrows, vcols);
        if (!emb || vidi_vision_encode(m->vision, item.pixels, item.rows, (const int32_t(*)[3])med.grid, 1, &temb,
                                       &err) != VIDI_OK) {
            fprintf(stderr, "test_shapes: %s: vision: %s\n", file, emb ? err.msg : "out of memory");
            failed = 1;
        }
        size_t qi;
        json_t *q;
        printf("%s:", file);
        json_array_foreach(qs, qi, q) {
            if (failed) break;
            const char *type = json_string_value(json_object_get(q, "type"));
            const char *text = json_string_value(json_object_get(q, "question"));
            const char *truth = json_string_value(json_object_get(q, "answer"));
            if (!type || !text || !truth) {
                fprintf(stderr, "test_shapes: %s question %zu: no type, question or answer\n", file, qi);
                failed = 1;
                break;
            }
            int32_t *ids = NULL;
            int64_t n_ids = 0;
            vidi_generate_result res = {0};
            char *ans = NULL;
            vidi_generate_params gp = vidi_generate_params_default();
            gp.max_tokens = 24;
            gp.vision_embeds = &temb;
            vidi_sparse_ctx sctx;
            vidi_status gst = vidi_prompt_build(&m->cfg, tok, NULL, text, &med, 1, &ids, &n_ids, &err);
            if (gst == VIDI_OK && sparse)
                gst = vidi_sparse_begin(m->text, sparse, ids, n_ids, m->cfg.image_token_id, m->cfg.video_token_id,
                                        (const int32_t(*)[3])med.grid, 1, m->cfg.vision.spatial_merge_size, &sctx, &err);
            if (gst == VIDI_OK) gst = vidi_generate(m, ids, n_ids, &med, 1, &gp, &res, &err);
            if (sparse) {
                vidi_sparse_end(m->text, &sctx);
                sp_pairs += sctx.pairs, sp_dense += sctx.dense_pairs, sp_fallbacks += sctx.grid_fallbacks;
                sp_ms += sctx.ms, sp_dense_layers += sctx.dense_layers;
            }
            if (gst != VIDI_OK ||
                vidi_tokenizer_decode(tok, res.tokens, (size_t)res.n_tokens, 1, &ans, &err) != VIDI_OK) {
                fprintf(stderr, "test_shapes: %s: '%s': %s\n", file, text, err.msg);
                failed = 1;
            } else {
                trim(ans);
                int right = !strcmp(ans, truth);
                const char *ref = ref_answer(answers, file, text);
                type_stat *s = stat_for(st, &n_st, type);
                if (s) {
                    s->n++;
                    s->right += right;
                }
                n_q++;
                n_right += right;
                if (ref) {
                    n_ref++;
                    n_agree += !strcmp(ans, ref);
                }
                printf(" [%s] %s -> %s%s", type, ans, right ? "ok" : "WRONG, truth ", right ? "" : truth);
                if (ref && strcmp(ans, ref)) printf(" (transformers: %s)", ref);
                printf(";");
            }
            free(ans);
            free(ids);
            vidi_generate_result_free(&res);
        }
        printf("\n");
        fflush(stdout);
        if (emb) be->ops->buf_free(be, emb);
        vidi_media_item_free(&item);
        n_scenes++;
        if (failed) break;
    }
    double dt = now_s() - t0;

    if (!failed) {
        double acc = n_q ? (double)n_right / n_q : 0.0;
        double agree = n_ref ? (double)n_agree / n_ref : 0.0;
        printf("\nper type:");
        for (int i = 0; i < n_st; i++)
            printf(" %s %.3f (%d/%d);", st[i].name, (double)st[i].right / st[i].n, st[i].right, st[i].n);
        printf("\nshapes accuracy: %.2f (N=%d)\n", acc, n_q);
        printf("agreement with transformers: %.4f (%d of %d questions); %d scenes in %.1f s\n", agree, n_agree,
               n_ref, n_scenes, dt);
        if (sparse)
            printf("sparse prefill (%s, %s backend): %.4f of the dense query-key pairs computed, %d grid fallbacks, "
                   "%d layers run dense, %.1f s in sparse attention\n", sparse_path, be->name,
                   sp_dense ? (double)sp_pairs / (double)sp_dense : 0.0, sp_fallbacks, sp_dense_layers, sp_ms / 1e3);
        int agree_needed = !sparse && on_cpu;
        int ok = n_q > 0 && acc >= min_acc && n_ref == n_q && (!agree_needed || agree >= 0.99);
        if (n_ref != n_q) printf("FAIL: %d questions have no transformers answer\n", n_q - n_ref);
        if (acc < min_acc) printf("FAIL: accuracy %.3f < %.2f\n", acc, min_acc);
        if (acc < 0.90) printf("note: below issue 5's goal of 0.90\n");
        if (agree < 0.99 && agree_needed) printf("FAIL: agreement %.4f < 0.99\n", agree);
        rc = ok ? 0 : 1;
    }
    vidi_sparse_config_free(sparse);
    vidi_tokenizer_free(tok);
    vidi_model_free(m);
    be->ops->destroy(be);
    json_decref(man);
    json_decref(refs);
    return rc;
}
