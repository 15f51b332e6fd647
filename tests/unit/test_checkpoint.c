/* tests/unit/test_checkpoint.c — model/checkpoint: single-file and sharded
 * folders, the name aliases of re-saved checkpoints, and every way a folder
 * can be wrong (each error names the file and the tensor). Fixtures are
 * written into a temporary directory; the tiny models under
 * tests/data/models are checked when they exist. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "test_util.h"

static int msg_has(const char *msg, const char *s) {
    return !s || strstr(msg, s) != NULL;
}
static const char *show(const char *s) {
    return s ? s : "";
}

/* A fresh folder <scratch>/<name>; returns its path (a rotating static buffer). */
static const char *case_dir(const char *name) {
    const char *dir = test_tmp_path(name);
    mkdir(dir, 0700);
    return dir;
}

static void write_text(const char *dir, const char *file, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *fp = fopen(path, "wb");
    if (!fp) return;
    fputs(text, fp);
    fclose(fp);
}

static float g_buf[4096];

/* Write dir/file with tensors named names[i], F32 with shapes [rows[i], 4]. */
static void write_f32(const char *dir, const char *file, int n, const char *const *names,
                      const int64_t *rows) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    vidi_st_entry ents[16];
    int64_t shapes[16][2];
    for (int i = 0; i < n; i++) {
        shapes[i][0] = rows[i];
        shapes[i][1] = 4;
        ents[i] = (vidi_st_entry){names[i], VIDI_ST_DTYPE_F32, 2, shapes[i], g_buf};
    }
    vidi_err e = {0};
    if (vidi_st_write(path, ents, n, NULL, 0, &e) != VIDI_OK) fprintf(stderr, "fixture: %s\n", e.msg);
}

#define EXPECT_ERR(rc, st, e, s1, s2)                                                                        \
    do {                                                                                                     \
        CHECK((rc) == (st), "status %s, want %s (%s)", vidi_status_name(rc), vidi_status_name(st), (e).msg); \
        CHECK(msg_has((e).msg, (s1)), "message has '%s': %s", show(s1), (e).msg);                            \
        CHECK(msg_has((e).msg, (s2)), "message has '%s': %s", show(s2), (e).msg);                            \
    } while (0)

/* A two-shard folder with old (canonical) names; `index` is the index JSON. */
static const char *sharded_dir(const char *name, const char *index) {
    const char *dir = case_dir(name);
    const char *a[] = {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"};
    const char *b[] = {"model.norm.weight", "lm_head.weight"};
    write_f32(dir, "model-00001-of-00002.safetensors", 2, a, (int64_t[]){8, 6});
    write_f32(dir, "model-00002-of-00002.safetensors", 2, b, (int64_t[]){1, 8});
    write_text(dir, "model.safetensors.index.json", index);
    return dir;
}

#define GOOD_INDEX                                                                                           \
    "{\"metadata\":{\"total_size\":368},\"weight_map\":{"                                                    \
    "\"model.embed_tokens.weight\":\"model-00001-of-00002.safetensors\","                                    \
    "\"model.layers.0.mlp.up_proj.weight\":\"model-00001-of-00002.safetensors\","                            \
    "\"model.norm.weight\":\"model-00002-of-00002.safetensors\","                                            \
    "\"lm_head.weight\":\"model-00002-of-00002.safetensors\"}}"

static void test_single_file_lookup(void) {
    const char *dir = case_dir("single");
    const char *names[] = {"model.embed_tokens.weight", "visual.blocks.0.attn.qkv.weight", "lm_head.weight"};
    for (int i = 0; i < 4096; i++)
        g_buf[i] = (float)i;
    write_f32(dir, "model.safetensors", 3, names, (int64_t[]){8, 12, 8});
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    REQUIRE(vidi_checkpoint_open(dir, &ck, &e) == VIDI_OK, "open: %s", e.msg);
    CHECK(vidi_checkpoint_count(ck) == 3, "count %d", vidi_checkpoint_count(ck));
    CHECK(!strcmp(vidi_checkpoint_name(ck, 0), "lm_head.weight") && vidi_checkpoint_name(ck, 3) == NULL,
          "names in order");
    CHECK(vidi_checkpoint_has(ck, "visual.blocks.0.attn.qkv.weight"), "has visual");
    CHECK(!vidi_checkpoint_has(ck, "model.norm.weight"), "has not");
    vidi_tensor t;
    vidi_status rc = vidi_checkpoint_get(ck, "model.embed_tokens.weight", 2, (int64_t[]){8, 4}, &t, &e);
    REQUIRE(rc == VIDI_OK, "get: %s", e.msg);
    CHECK(t.dtype == VIDI_DTYPE_F32 && ((const float *)t.data)[5] == 5.0f, "data");
    rc = vidi_checkpoint_get(ck, "lm_head.weight", 0, NULL, &t, &e);
    CHECK(rc == VIDI_OK && t.shape[0] == 8, "get without a shape check: %s", e.msg);
    vidi_checkpoint_close(ck);
}

static void test_new_names_resolve_from_canonical(void) {
    const char *dir = case_dir("renamed");
    const char *names[] = {"model.language_model.embed_tokens.weight",
                           "model.visual.blocks.0.attn.qkv.weight", "lm_head.weight"};
    write_f32(dir, "model.safetensors", 3, names, (int64_t[]){8, 12, 8});
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    REQUIRE(vidi_checkpoint_open(dir, &ck, &e) == VIDI_OK, "open: %s", e.msg);
    CHECK(vidi_checkpoint_has(ck, "model.embed_tokens.weight"), "model. -> model.language_model.");
    CHECK(vidi_checkpoint_has(ck, "visual.blocks.0.attn.qkv.weight"), "visual. -> model.visual.");
    CHECK(vidi_checkpoint_has(ck, "lm_head.weight"), "lm_head. stays");
    CHECK(vidi_checkpoint_has(ck, "model.language_model.embed_tokens.weight"), "exact new name");
    vidi_tensor t;
    vidi_status rc =
        vidi_checkpoint_get(ck, "visual.blocks.0.attn.qkv.weight", 2, (int64_t[]){12, 4}, &t, &e);
    CHECK(rc == VIDI_OK, "get via alias: %s", e.msg);
    rc = vidi_checkpoint_get(ck, "model.norm.weight", 1, (int64_t[]){4}, &t, &e);
    EXPECT_ERR(rc, VIDI_ERR_NOTFOUND, e, "'model.norm.weight'", "model.language_model.norm.weight");
    vidi_checkpoint_close(ck);
}

static void test_sharded_index(void) {
    const char *dir = sharded_dir("sharded", GOOD_INDEX);
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    REQUIRE(vidi_checkpoint_open(dir, &ck, &e) == VIDI_OK, "open: %s", e.msg);
    CHECK(vidi_checkpoint_count(ck) == 4, "count %d", vidi_checkpoint_count(ck));
    vidi_tensor t;
    CHECK(vidi_checkpoint_get(ck, "model.layers.0.mlp.up_proj.weight", 2, (int64_t[]){6, 4}, &t, &e) ==
              VIDI_OK,
          "shard 1: %s", e.msg);
    CHECK(vidi_checkpoint_get(ck, "lm_head.weight", 2, (int64_t[]){8, 4}, &t, &e) == VIDI_OK, "shard 2: %s",
          e.msg);
    vidi_checkpoint_close(ck);
}

static void test_index_missing_tensor_in_shard(void) {
    const char *dir =
        sharded_dir("index-missing-tensor",
                    "{\"weight_map\":{"
                    "\"model.embed_tokens.weight\":\"model-00001-of-00002.safetensors\","
                    "\"model.layers.9.mlp.up_proj.weight\":\"model-00001-of-00002.safetensors\"}}");
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    vidi_status rc = vidi_checkpoint_open(dir, &ck, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "'model.layers.9.mlp.up_proj.weight'",
               "model-00001-of-00002.safetensors");
    CHECK(ck == NULL, "no handle");
}

static void test_index_missing_shard_file(void) {
    const char *dir = sharded_dir("index-missing-shard",
                                  "{\"weight_map\":{"
                                  "\"model.embed_tokens.weight\":\"model-00001-of-00002.safetensors\","
                                  "\"model.norm.weight\":\"model-00003-of-00003.safetensors\"}}");
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    vidi_status rc = vidi_checkpoint_open(dir, &ck, &e);
    EXPECT_ERR(rc, VIDI_ERR_NOTFOUND, e, "model-00003-of-00003.safetensors", "does not exist");
}

static void test_index_shard_name_with_dotdot(void) {
    const char *dir =
        sharded_dir("index-dotdot", "{\"weight_map\":{\"model.norm.weight\":\"..evil.safetensors\"}}");
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    vidi_status rc = vidi_checkpoint_open(dir, &ck, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "..evil.safetensors", "'model.norm.weight'");
}

static void test_index_shard_name_with_slash(void) {
    const char *dir = sharded_dir("index-slash", "{\"weight_map\":{\"model.norm.weight\":\"/etc/passwd\"}}");
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    vidi_status rc = vidi_checkpoint_open(dir, &ck, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "/etc/passwd", "model.safetensors.index.json");
}

static void test_index_json_malformed(void) {
    const char *dir = sharded_dir("index-bad-json", "{\"weight_map\": {\"model.norm.weight\": ");
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    vidi_status rc = vidi_checkpoint_open(dir, &ck, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "model.safetensors.index.json", "not valid JSON");
}

static void test_index_without_weight_map(void) {
    const char *dir = sharded_dir("index-no-map", "{\"metadata\":{}}");
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    vidi_status rc = vidi_checkpoint_open(dir, &ck, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "model.safetensors.index.json", "weight_map");
}

static void test_index_entry_not_string(void) {
    const char *dir = sharded_dir("index-entry-int", "{\"weight_map\":{\"model.norm.weight\":2}}");
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    vidi_status rc = vidi_checkpoint_open(dir, &ck, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "model.safetensors.index.json", "'model.norm.weight'");
}

static void test_corrupt_shard_names_the_shard(void) {
    const char *dir = sharded_dir("corrupt-shard", GOOD_INDEX);
    char path[1024];
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    REQUIRE(truncate(path, 40) == 0, "truncate the shard");
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    vidi_status rc = vidi_checkpoint_open(dir, &ck, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "model-00002-of-00002.safetensors", "truncated");
}

static void test_wrong_shape_requested(void) {
    const char *dir = case_dir("wrong-shape");
    const char *names[] = {"model.layers.0.self_attn.q_proj.weight"};
    write_f32(dir, "model.safetensors", 1, names, (int64_t[]){8});
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    REQUIRE(vidi_checkpoint_open(dir, &ck, &e) == VIDI_OK, "open: %s", e.msg);
    vidi_tensor t;
    vidi_status rc =
        vidi_checkpoint_get(ck, "model.layers.0.self_attn.q_proj.weight", 2, (int64_t[]){4, 8}, &t, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "model.safetensors: tensor 'model.layers.0.self_attn.q_proj.weight'",
               "expected shape [4,8] but the file has [8,4]");
    rc = vidi_checkpoint_get(ck, "model.layers.0.self_attn.q_proj.weight", 1, (int64_t[]){32}, &t, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "expected shape [32]", "[8,4]");
    vidi_checkpoint_close(ck);
}

static void test_unsupported_dtype_requested(void) {
    const char *dir = case_dir("i64");
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int64_t ids[3] = {0, 1, 2};
    vidi_st_entry ent = {"visual.position_ids", VIDI_ST_DTYPE_I64, 1, (int64_t[]){3}, ids};
    vidi_err e = {0};
    REQUIRE(vidi_st_write(path, &ent, 1, NULL, 0, &e) == VIDI_OK, "fixture: %s", e.msg);
    vidi_checkpoint *ck = NULL;
    REQUIRE(vidi_checkpoint_open(dir, &ck, &e) == VIDI_OK, "open: %s", e.msg);
    vidi_tensor t;
    vidi_status rc = vidi_checkpoint_get(ck, "visual.position_ids", 1, (int64_t[]){3}, &t, &e);
    EXPECT_ERR(rc, VIDI_ERR_UNSUPPORTED, e, "'visual.position_ids'", "I64");
    CHECK(msg_has(e.msg, "model.safetensors"), "names the file: %s", e.msg);
    vidi_checkpoint_close(ck);
}

static void test_missing_tensor(void) {
    const char *dir = sharded_dir("missing-tensor", GOOD_INDEX);
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    REQUIRE(vidi_checkpoint_open(dir, &ck, &e) == VIDI_OK, "open: %s", e.msg);
    vidi_tensor t;
    vidi_status rc = vidi_checkpoint_get(ck, "lm_head.bias", 0, NULL, &t, &e);
    EXPECT_ERR(rc, VIDI_ERR_NOTFOUND, e, "'lm_head.bias'", dir);
    vidi_checkpoint_close(ck);
}

static void test_folder_without_weights(void) {
    const char *dir = case_dir("no-weights");
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    vidi_status rc = vidi_checkpoint_open(dir, &ck, &e);
    EXPECT_ERR(rc, VIDI_ERR_NOTFOUND, e, dir, "model.safetensors");
}

static void test_missing_folder(void) {
    const char *dir = test_tmp_path("nowhere");
    vidi_checkpoint *ck = NULL;
    vidi_err e = {0};
    vidi_status rc = vidi_checkpoint_open(dir, &ck, &e);
    EXPECT_ERR(rc, VIDI_ERR_NOTFOUND, e, dir, NULL);
}

static void test_five_dim_patch_embed_checks_full_shape(void) {
    const char *dir = case_dir("conv3d");
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int64_t shape[5] = {4, 3, 2, 2, 2};
    vidi_st_entry ent = {"visual.patch_embed.proj.weight", VIDI_ST_DTYPE_F32, 5, shape, g_buf};
    vidi_err e = {0};
    REQUIRE(vidi_st_write(path, &ent, 1, NULL, 0, &e) == VIDI_OK, "fixture: %s", e.msg);
    vidi_checkpoint *ck = NULL;
    REQUIRE(vidi_checkpoint_open(dir, &ck, &e) == VIDI_OK, "open: %s", e.msg);
    vidi_tensor t;
    vidi_status rc = vidi_checkpoint_get(ck, "visual.patch_embed.proj.weight", 5, shape, &t, &e);
    REQUIRE(rc == VIDI_OK, "5-D shape check: %s", e.msg);
    CHECK(t.ndim == 4 && t.shape[0] == 4 && vidi_tensor_numel(&t) == 96, "folded view");
    rc = vidi_checkpoint_get(ck, "visual.patch_embed.proj.weight", 5, (int64_t[]){4, 3, 2, 1, 4}, &t, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "[4,3,2,1,4]", "[4,3,2,2,2]");
    vidi_checkpoint_close(ck);
}

/* ---- the tiny test models, when present ---- */

static int tiny_present(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", test_data_path(name));
    return access(path, R_OK) == 0;
}

/* The text and vision weights every layer must have, with their shapes. */
static void check_tiny(const char *name, vidi_arch arch, vidi_dtype dtype, int tied) {
    if (!tiny_present(name)) {
        printf("skip %s: %s not generated yet\n", name, test_data_path(name));
        return;
    }
    const char *dir = test_data_path(name);
    char dirbuf[1024];
    snprintf(dirbuf, sizeof dirbuf, "%s", dir);
    vidi_model_config cfg;
    vidi_err e = {0};
    REQUIRE(vidi_model_config_load(dirbuf, &cfg, &e) == VIDI_OK, "config: %s", e.msg);
    CHECK(cfg.arch == arch, "arch");
    CHECK(cfg.text.tie_word_embeddings == tied, "tie_word_embeddings %d", cfg.text.tie_word_embeddings);
    vidi_checkpoint *ck = NULL;
    REQUIRE(vidi_checkpoint_open(dirbuf, &ck, &e) == VIDI_OK, "checkpoint: %s", e.msg);

    const vidi_text_config *t = &cfg.text;
    int64_t H = t->hidden_size, I = t->intermediate_size, V = t->vocab_size;
    int64_t q = (int64_t)t->num_heads * t->head_dim, kv = (int64_t)t->num_kv_heads * t->head_dim;
    char nm[256];
    vidi_tensor x;
#define GET(shape_nd, ...)                                                                                   \
    do {                                                                                                     \
        vidi_status rc_ = vidi_checkpoint_get(ck, nm, shape_nd, (int64_t[]){__VA_ARGS__}, &x, &e);           \
        CHECK(rc_ == VIDI_OK, "%s: %s", nm, e.msg);                                                          \
        CHECK(rc_ != VIDI_OK || x.dtype == dtype, "%s: dtype %s", nm, vidi_dtype_name(x.dtype));             \
    } while (0)
    snprintf(nm, sizeof nm, "model.embed_tokens.weight");
    GET(2, V, H);
    snprintf(nm, sizeof nm, "model.norm.weight");
    GET(1, H);
    for (int l = 0; l < t->num_layers; l++) {
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.q_proj.weight", l);
        GET(2, q, H);
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.k_proj.bias", l);
        GET(1, kv);
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.v_proj.weight", l);
        GET(2, kv, H);
        snprintf(nm, sizeof nm, "model.layers.%d.self_attn.o_proj.weight", l);
        GET(2, H, q);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.gate_proj.weight", l);
        GET(2, I, H);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.down_proj.weight", l);
        GET(2, H, I);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l);
        GET(1, H);
    }
    CHECK(vidi_checkpoint_has(ck, "lm_head.weight") == !tied, "lm_head.weight present iff untied");
    if (!tied) {
        snprintf(nm, sizeof nm, "lm_head.weight");
        GET(2, V, H);
    }

    const vidi_vision_config *v = &cfg.vision;
    int64_t D = v->hidden_size, F = v->intermediate_size,
            M = (int64_t)D * v->spatial_merge_size * v->spatial_merge_size;
    snprintf(nm, sizeof nm, "visual.patch_embed.proj.weight");
    GET(5, D, v->in_channels, v->temporal_patch_size, v->patch_size, v->patch_size);
    for (int b = 0; b < v->depth; b++) {
        snprintf(nm, sizeof nm, "visual.blocks.%d.attn.qkv.weight", b);
        GET(2, 3 * D, D);
        snprintf(nm, sizeof nm, "visual.blocks.%d.attn.proj.weight", b);
        GET(2, D, D);
        snprintf(nm, sizeof nm, "visual.blocks.%d.norm1.weight", b);
        GET(1, D);
        if (arch == VIDI_ARCH_QWEN2_VL) {
            snprintf(nm, sizeof nm, "visual.blocks.%d.mlp.fc1.weight", b);
            GET(2, F, D);
            snprintf(nm, sizeof nm, "visual.blocks.%d.mlp.fc2.weight", b);
            GET(2, D, F);
        } else {
            snprintf(nm, sizeof nm, "visual.blocks.%d.mlp.gate_proj.weight", b);
            GET(2, F, D);
            snprintf(nm, sizeof nm, "visual.blocks.%d.mlp.down_proj.weight", b);
            GET(2, D, F);
        }
    }
    snprintf(nm, sizeof nm, "visual.merger.ln_q.weight");
    GET(1, D);
    snprintf(nm, sizeof nm, "visual.merger.mlp.0.weight");
    GET(2, M, M);
    snprintf(nm, sizeof nm, "visual.merger.mlp.2.weight");
    GET(2, v->out_hidden_size, M);
#undef GET
    vidi_checkpoint_close(ck);
}

static void test_tiny_qwen2vl(void) {
    check_tiny("models/tiny-qwen2vl", VIDI_ARCH_QWEN2_VL, VIDI_DTYPE_BF16, 1);
}

static void test_tiny_qwen25vl(void) {
    check_tiny("models/tiny-qwen25vl", VIDI_ARCH_QWEN2_5_VL, VIDI_DTYPE_F32, 0);
}

int main(int argc, char **argv) {
    if (!test_tmpdir()) return 1;
    static const test_case cases[] = {
        {"single_file_lookup", test_single_file_lookup},
        {"new_names_resolve_from_canonical", test_new_names_resolve_from_canonical},
        {"sharded_index", test_sharded_index},
        {"index_missing_tensor_in_shard", test_index_missing_tensor_in_shard},
        {"index_missing_shard_file", test_index_missing_shard_file},
        {"index_shard_name_with_dotdot", test_index_shard_name_with_dotdot},
        {"index_shard_name_with_slash", test_index_shard_name_with_slash},
        {"index_json_malformed", test_index_json_malformed},
        {"index_without_weight_map", test_index_without_weight_map},
        {"index_entry_not_string", test_index_entry_not_string},
        {"corrupt_shard_names_the_shard", test_corrupt_shard_names_the_shard},
        {"wrong_shape_requested", test_wrong_shape_requested},
        {"unsupported_dtype_requested", test_unsupported_dtype_requested},
        {"missing_tensor", test_missing_tensor},
        {"folder_without_weights", test_folder_without_weights},
        {"missing_folder", test_missing_folder},
        {"five_dim_patch_embed_checks_full_shape", test_five_dim_patch_embed_checks_full_shape},
        {"tiny_qwen2vl", test_tiny_qwen2vl},
        {"tiny_qwen25vl", test_tiny_qwen25vl},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    return rc;
}
