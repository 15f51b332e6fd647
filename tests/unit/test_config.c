/* tests/unit/test_config.c — model/config: config.json of Qwen2-VL and
 * Qwen2.5-VL in the flat and nested (text_config) forms, rope settings in
 * rope_scaling or rope_parameters, end-of-sequence ids from both files,
 * preprocessor and generation configs, and every refused config naming the
 * file and the field. Fixtures are built with jansson in a temporary
 * directory; the tiny models under tests/data/models are read when present. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/config.h"
#include "test_util.h"

static int msg_has(const char *msg, const char *s) {
    return !s || strstr(msg, s) != NULL;
}
static const char *show(const char *s) {
    return s ? s : "";
}

#define EXPECT_ERR(rc, st, e, s1, s2)                                                                        \
    do {                                                                                                     \
        CHECK((rc) == (st), "status %s, want %s (%s)", vidi_status_name(rc), vidi_status_name(st), (e).msg); \
        CHECK(msg_has((e).msg, (s1)), "message has '%s': %s", show(s1), (e).msg);                            \
        CHECK(msg_has((e).msg, (s2)), "message has '%s': %s", show(s2), (e).msg);                            \
    } while (0)

/* Qwen2-VL, flat: text fields at the top level. */
static const char *BASE_2VL_FLAT =
    "{\"architectures\":[\"Qwen2VLForConditionalGeneration\"],\"model_type\":\"qwen2_vl\","
    "\"eos_token_id\":151645,\"vision_start_token_id\":151652,\"vision_end_token_id\":151653,"
    "\"image_token_id\":151655,\"video_token_id\":151656,\"hidden_act\":\"silu\",\"hidden_size\":64,"
    "\"intermediate_size\":128,\"max_position_embeddings\":32768,\"num_attention_heads\":4,"
    "\"num_hidden_layers\":2,\"num_key_value_heads\":2,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,"
    "\"sliding_window\":32768,\"tie_word_embeddings\":true,\"use_sliding_window\":false,"
    "\"vision_config\":{\"depth\":2,\"embed_dim\":32,\"mlp_ratio\":4,\"num_heads\":2,\"in_chans\":3,"
    "\"hidden_size\":64,\"patch_size\":14,\"spatial_merge_size\":2,\"temporal_patch_size\":2},"
    "\"rope_scaling\":{\"type\":\"mrope\",\"mrope_section\":[2,3,3]},\"vocab_size\":151936}";

/* Qwen2.5-VL, nested as transformers 5 saves it: text_config with
 * rope_parameters (rope_theta inside), token ids at the top level. */
static const char *BASE_25VL_NESTED =
    "{\"architectures\":[\"Qwen2_5_VLForConditionalGeneration\"],\"model_type\":\"qwen2_5_vl\","
    "\"image_token_id\":151655,\"video_token_id\":151656,\"vision_start_token_id\":151652,"
    "\"vision_end_token_id\":151653,\"tie_word_embeddings\":false,"
    "\"text_config\":{\"model_type\":\"qwen2_5_vl_text\",\"eos_token_id\":151645,\"hidden_act\":\"silu\","
    "\"hidden_size\":64,\"intermediate_size\":128,\"max_position_embeddings\":128000,"
    "\"num_attention_heads\":4,\"num_hidden_layers\":3,\"num_key_value_heads\":1,\"rms_norm_eps\":1e-05,"
    "\"rope_parameters\":{\"mrope_section\":[2,3,3],\"rope_theta\":500000.0,\"rope_type\":\"default\"},"
    "\"sliding_window\":null,\"use_sliding_window\":false,\"vocab_size\":152064},"
    "\"vision_config\":{\"depth\":4,\"fullatt_block_indexes\":[1,3],\"hidden_act\":\"silu\","
    "\"hidden_size\":32,\"in_channels\":3,\"intermediate_size\":48,\"num_heads\":2,\"out_hidden_size\":64,"
    "\"patch_size\":14,\"spatial_merge_size\":2,\"temporal_patch_size\":2,\"tokens_per_second\":2,"
    "\"window_size\":56}}";

/* Set (or with val NULL, delete) the field at a dotted path; steals val. */
static void jset(json_t *root, const char *path, json_t *val) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *obj = root;
    char *key = buf, *dot;
    while ((dot = strchr(key, '.'))) {
        *dot = '\0';
        json_t *next = json_object_get(obj, key);
        if (!json_is_object(next)) {
            next = json_object();
            json_object_set_new(obj, key, next);
        }
        obj = next;
        key = dot + 1;
    }
    if (val)
        json_object_set_new(obj, key, val);
    else
        json_object_del(obj, key);
}

static json_t *jparse(const char *text) {
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    if (!j) fprintf(stderr, "fixture JSON: %s\n", je.text);
    return j;
}

/* A fresh folder <scratch>/<name> holding the given files (NULL: absent);
 * steals the JSON objects. */
static const char *write_case(const char *name, json_t *config, json_t *generation, json_t *preproc) {
    const char *dir = test_tmp_path(name);
    mkdir(dir, 0700);
    char path[1024];
    struct {
        const char *file;
        json_t *j;
    } files[] = {{"config.json", config},
                 {"generation_config.json", generation},
                 {"preprocessor_config.json", preproc}};
    for (int i = 0; i < 3; i++) {
        if (!files[i].j) continue;
        snprintf(path, sizeof path, "%s/%s", dir, files[i].file);
        json_dump_file(files[i].j, path, JSON_INDENT(2));
        json_decref(files[i].j);
    }
    return dir;
}

static void write_raw(const char *dir, const char *file, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *fp = fopen(path, "wb");
    if (!fp) return;
    fputs(text, fp);
    fclose(fp);
}

/* Load config.json from a folder made of `base` with one change. */
static vidi_status load_changed(const char *name, const char *base, const char *path, json_t *val,
                                vidi_model_config *cfg, vidi_err *e) {
    json_t *c = jparse(base);
    jset(c, path, val);
    return vidi_model_config_load(write_case(name, c, NULL, NULL), cfg, e);
}

/* ---- accepted forms ---- */

static void test_flat_qwen2vl(void) {
    vidi_model_config c;
    vidi_err e = {0};
    const char *dir =
        write_case("flat-2vl", jparse(BASE_2VL_FLAT), jparse("{\"eos_token_id\":[151645,151643]}"), NULL);
    vidi_status rc = vidi_model_config_load(dir, &c, &e);
    REQUIRE(rc == VIDI_OK, "load: %s", e.msg);
    CHECK(c.arch == VIDI_ARCH_QWEN2_VL, "arch");
    CHECK(c.text.hidden_size == 64 && c.text.intermediate_size == 128 && c.text.num_layers == 2,
          "text sizes");
    CHECK(c.text.num_heads == 4 && c.text.num_kv_heads == 2 && c.text.head_dim == 16, "heads");
    CHECK(c.text.vocab_size == 151936 && c.text.max_position_embeddings == 32768, "vocab/positions");
    CHECK(fabsf(c.text.rms_norm_eps - 1e-6f) < 1e-12f && c.text.rope_theta == 1e6, "eps/theta");
    CHECK(c.text.mrope_section[0] == 2 && c.text.mrope_section[1] == 3 && c.text.mrope_section[2] == 3,
          "mrope");
    CHECK(c.text.tie_word_embeddings == 1, "tied");
    CHECK(c.vision.depth == 2 && c.vision.hidden_size == 32 && c.vision.num_heads == 2 &&
              c.vision.head_dim == 16,
          "vision sizes");
    CHECK(c.vision.intermediate_size == 128, "embed_dim * mlp_ratio = %d", c.vision.intermediate_size);
    CHECK(c.vision.out_hidden_size == 64, "merger output from vision_config.hidden_size");
    CHECK(c.vision.hidden_act == VIDI_ACT_QUICK_GELU, "quick_gelu by default");
    CHECK(c.vision.in_channels == 3 && c.vision.patch_size == 14 && c.vision.spatial_merge_size == 2 &&
              c.vision.temporal_patch_size == 2,
          "patching");
    CHECK(c.image_token_id == 151655 && c.video_token_id == 151656 && c.vision_start_token_id == 151652 &&
              c.vision_end_token_id == 151653,
          "token ids");
    CHECK(c.n_eos == 2 && c.eos_token_ids[0] == 151645 && c.eos_token_ids[1] == 151643,
          "eos union of config and generation config without duplicates (n=%d)", c.n_eos);
}

static void test_nested_qwen25vl(void) {
    vidi_model_config c;
    vidi_err e = {0};
    const char *dir = write_case("nested-25vl", jparse(BASE_25VL_NESTED), NULL, NULL);
    vidi_status rc = vidi_model_config_load(dir, &c, &e);
    REQUIRE(rc == VIDI_OK, "load: %s", e.msg);
    CHECK(c.arch == VIDI_ARCH_QWEN2_5_VL, "arch");
    CHECK(c.text.hidden_size == 64 && c.text.num_layers == 3 && c.text.num_kv_heads == 1,
          "text from text_config");
    CHECK(c.text.rope_theta == 500000.0, "rope_theta inside rope_parameters: %g", c.text.rope_theta);
    CHECK(fabsf(c.text.rms_norm_eps - 1e-5f) < 1e-12f, "eps");
    CHECK(c.text.tie_word_embeddings == 0, "untied");
    CHECK(c.text.max_position_embeddings == 128000 && c.text.vocab_size == 152064, "positions/vocab");
    CHECK(c.vision.hidden_size == 32 && c.vision.intermediate_size == 48 && c.vision.out_hidden_size == 64,
          "vision sizes");
    CHECK(c.vision.hidden_act == VIDI_ACT_SILU, "silu");
    CHECK(c.vision.window_size == 56 && c.vision.tokens_per_second == 2.0f, "window/tps");
    CHECK(c.vision.n_fullatt == 2 && c.vision.fullatt_block_indexes[0] == 1 &&
              c.vision.fullatt_block_indexes[1] == 3,
          "fullatt");
    CHECK(c.n_eos == 1 && c.eos_token_ids[0] == 151645, "eos from text_config");
}

static void test_nested_qwen2vl(void) {
    /* Qwen2-VL re-saved with text_config and rope_scaling inside it */
    json_t *c = jparse(BASE_2VL_FLAT), *tc = json_object();
    const char *keys[] = {"hidden_size",       "intermediate_size",   "num_attention_heads",
                          "num_hidden_layers", "num_key_value_heads", "rope_scaling",
                          "vocab_size",        "rope_theta",          "eos_token_id"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_object_set(tc, keys[i], json_object_get(c, keys[i]));
        json_object_del(c, keys[i]);
    }
    json_object_set_new(tc, "model_type", json_string("qwen2_vl_text"));
    json_object_set_new(c, "text_config", tc);
    vidi_model_config cfg;
    vidi_err e = {0};
    vidi_status rc = vidi_model_config_load(write_case("nested-2vl", c, NULL, NULL), &cfg, &e);
    REQUIRE(rc == VIDI_OK, "load: %s", e.msg);
    CHECK(cfg.arch == VIDI_ARCH_QWEN2_VL && cfg.text.hidden_size == 64 && cfg.text.num_layers == 2, "fields");
    CHECK(cfg.text.mrope_section[2] == 3 && cfg.vision.out_hidden_size == 64, "rope and vision");
    CHECK(cfg.n_eos == 1 && cfg.eos_token_ids[0] == 151645, "eos");
}

static void test_flat_qwen25vl(void) {
    /* the original Qwen2.5-VL release: flat, rope_scaling, in_chans */
    json_t *c = jparse(BASE_25VL_NESTED);
    json_t *tc = json_incref(json_object_get(c, "text_config"));
    json_object_del(c, "text_config");
    json_object_update(c, tc);
    json_decref(tc);
    json_object_del(c, "rope_parameters");
    jset(c, "rope_scaling", jparse("{\"type\":\"mrope\",\"mrope_section\":[2,3,3]}"));
    jset(c, "rope_theta", json_real(1e6));
    jset(c, "model_type", json_string("qwen2_5_vl"));
    jset(c, "vision_config.in_channels", NULL);
    jset(c, "vision_config.in_chans", json_integer(3));
    vidi_model_config cfg;
    vidi_err e = {0};
    vidi_status rc = vidi_model_config_load(write_case("flat-25vl", c, NULL, NULL), &cfg, &e);
    REQUIRE(rc == VIDI_OK, "load: %s", e.msg);
    CHECK(cfg.arch == VIDI_ARCH_QWEN2_5_VL && cfg.text.num_layers == 3 && cfg.text.rope_theta == 1e6,
          "fields");
    CHECK(cfg.vision.in_channels == 3 && cfg.vision.n_fullatt == 2, "vision");
}

static void test_rope_parameters_beside_rope_scaling(void) {
    /* theta in rope_parameters, mrope_section in rope_scaling */
    json_t *c = jparse(BASE_2VL_FLAT);
    jset(c, "rope_theta", NULL);
    jset(c, "rope_parameters", jparse("{\"rope_type\":\"default\",\"rope_theta\":250000.0}"));
    vidi_model_config cfg;
    vidi_err e = {0};
    vidi_status rc = vidi_model_config_load(write_case("rope-mixed", c, NULL, NULL), &cfg, &e);
    REQUIRE(rc == VIDI_OK, "load: %s", e.msg);
    CHECK(cfg.text.rope_theta == 250000.0 && cfg.text.mrope_section[1] == 3, "theta %g", cfg.text.rope_theta);
    rc = load_changed("rope-theta-default", BASE_2VL_FLAT, "rope_theta", NULL, &cfg, &e);
    CHECK(rc == VIDI_OK && cfg.text.rope_theta == 1e6, "default theta: %s", e.msg);
}

static void test_architectures_when_model_type_missing(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("arch-fallback", BASE_25VL_NESTED, "model_type", NULL, &c, &e);
    CHECK(rc == VIDI_OK && c.arch == VIDI_ARCH_QWEN2_5_VL, "Qwen2_5_VLForConditionalGeneration: %s", e.msg);
    rc = load_changed("arch-fallback-2", BASE_2VL_FLAT, "model_type", NULL, &c, &e);
    CHECK(rc == VIDI_OK && c.arch == VIDI_ARCH_QWEN2_VL, "Qwen2VLForConditionalGeneration: %s", e.msg);
}

static void test_tie_word_embeddings_forms(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("tie-absent", BASE_2VL_FLAT, "tie_word_embeddings", NULL, &c, &e);
    CHECK(rc == VIDI_OK && c.text.tie_word_embeddings == 0, "absent = untied: %s", e.msg);
    rc = load_changed("tie-nested", BASE_25VL_NESTED, "text_config.tie_word_embeddings", json_true(), &c, &e);
    CHECK(rc == VIDI_OK && c.text.tie_word_embeddings == 1, "text_config wins over the top level: %s", e.msg);
    rc = load_changed("tie-top", BASE_25VL_NESTED, "tie_word_embeddings", json_true(), &c, &e);
    CHECK(rc == VIDI_OK && c.text.tie_word_embeddings == 1, "top level when text_config is silent: %s",
          e.msg);
}

static void test_explicit_head_dim(void) {
    json_t *c = jparse(BASE_2VL_FLAT);
    jset(c, "head_dim", json_integer(32));
    jset(c, "rope_scaling.mrope_section", jparse("[4,6,6]"));
    vidi_model_config cfg;
    vidi_err e = {0};
    vidi_status rc = vidi_model_config_load(write_case("head-dim", c, NULL, NULL), &cfg, &e);
    CHECK(rc == VIDI_OK && cfg.text.head_dim == 32, "head_dim given: %s", e.msg);
}

static void test_token_ids_default_when_absent(void) {
    json_t *c = jparse(BASE_25VL_NESTED);
    const char *ids[] = {"image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"};
    for (int i = 0; i < 4; i++)
        jset(c, ids[i], NULL);
    vidi_model_config cfg;
    vidi_err e = {0};
    vidi_status rc = vidi_model_config_load(write_case("token-defaults", c, NULL, NULL), &cfg, &e);
    REQUIRE(rc == VIDI_OK, "load: %s", e.msg);
    CHECK(cfg.image_token_id == 151655 && cfg.video_token_id == 151656 &&
              cfg.vision_start_token_id == 151652 && cfg.vision_end_token_id == 151653,
          "defaults");
}

static void test_vision_defaults(void) {
    json_t *c = jparse(BASE_2VL_FLAT);
    const char *opt[] = {"vision_config.mlp_ratio",           "vision_config.in_chans",
                         "vision_config.patch_size",          "vision_config.spatial_merge_size",
                         "vision_config.temporal_patch_size", "vision_config.hidden_size"};
    for (int i = 0; i < 6; i++)
        jset(c, opt[i], NULL);
    vidi_model_config cfg;
    vidi_err e = {0};
    vidi_status rc = vidi_model_config_load(write_case("vision-defaults", c, NULL, NULL), &cfg, &e);
    REQUIRE(rc == VIDI_OK, "load: %s", e.msg);
    CHECK(cfg.vision.intermediate_size == 128 && cfg.vision.in_channels == 3 && cfg.vision.patch_size == 14 &&
              cfg.vision.out_hidden_size == 64,
          "defaults");
}

static void test_eos_int_or_list_from_both_files(void) {
    json_t *c = jparse(BASE_2VL_FLAT);
    jset(c, "eos_token_id", jparse("[151645, 151643]"));
    vidi_model_config cfg;
    vidi_err e = {0};
    const char *dir = write_case("eos-lists", c, jparse("{\"eos_token_id\":151644}"), NULL);
    vidi_status rc = vidi_model_config_load(dir, &cfg, &e);
    REQUIRE(rc == VIDI_OK, "load: %s", e.msg);
    CHECK(cfg.n_eos == 3 && cfg.eos_token_ids[2] == 151644, "list in config, int in generation config");
}

/* ---- refused configs ---- */

static void test_missing_config(void) {
    vidi_model_config cfg;
    vidi_err e = {0};
    const char *dir = write_case("no-config", NULL, NULL, NULL);
    vidi_status rc = vidi_model_config_load(dir, &cfg, &e);
    EXPECT_ERR(rc, VIDI_ERR_NOTFOUND, e, "config.json", NULL);
}

static void test_config_bad_json(void) {
    const char *dir = write_case("bad-json", NULL, NULL, NULL);
    write_raw(dir, "config.json", "{\"model_type\": \"qwen2_vl\",,}");
    vidi_model_config cfg;
    vidi_err e = {0};
    vidi_status rc = vidi_model_config_load(dir, &cfg, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "not valid JSON");
}

static void test_config_not_object(void) {
    const char *dir = write_case("not-object", NULL, NULL, NULL);
    write_raw(dir, "config.json", "[1,2]");
    vidi_model_config cfg;
    vidi_err e = {0};
    vidi_status rc = vidi_model_config_load(dir, &cfg, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "not a JSON object");
}

static void test_generation_config_bad_json(void) {
    const char *dir = write_case("bad-gen", jparse(BASE_2VL_FLAT), NULL, NULL);
    write_raw(dir, "generation_config.json", "{\"eos_token_id\": [1, }");
    vidi_model_config cfg;
    vidi_err e = {0};
    vidi_status rc = vidi_model_config_load(dir, &cfg, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "generation_config.json", "not valid JSON");
}

static void test_missing_field_flat(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("missing-flat", BASE_2VL_FLAT, "hidden_size", NULL, &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json: missing field 'hidden_size'", NULL);
}

static void test_missing_field_nested(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("missing-nested", BASE_25VL_NESTED, "text_config.num_hidden_layers", NULL, &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'text_config.num_hidden_layers'");
}

static void test_missing_vision_config(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("missing-vision", BASE_2VL_FLAT, "vision_config", NULL, &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'vision_config'");
}

static void test_missing_vision_field(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("missing-embed-dim", BASE_2VL_FLAT, "vision_config.embed_dim", NULL, &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'vision_config.embed_dim'");
}

static void test_wrong_type_string_for_integer(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("wrong-type", BASE_25VL_NESTED, "text_config.hidden_size", json_string("64"), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "'text_config.hidden_size'", "not an integer");
    CHECK(msg_has(e.msg, "config.json"), "names the file: %s", e.msg);
}

static void test_wrong_type_for_boolean(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("wrong-bool", BASE_2VL_FLAT, "tie_word_embeddings", json_string("yes"), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'tie_word_embeddings'");
}

static void test_wrong_type_for_text_config(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("wrong-text-config", BASE_25VL_NESTED, "text_config", json_integer(1), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'text_config'");
}

static void test_unknown_model_type(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("llava", BASE_2VL_FLAT, "model_type", json_string("llava"), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_UNSUPPORTED, e, "config.json: field 'model_type'", "'llava'");
}

static void test_unknown_architecture_without_model_type(void) {
    json_t *c = jparse(BASE_2VL_FLAT);
    jset(c, "model_type", NULL);
    jset(c, "architectures", jparse("[\"LlamaForCausalLM\"]"));
    vidi_model_config cfg;
    vidi_err e = {0};
    vidi_status rc = vidi_model_config_load(write_case("llama", c, NULL, NULL), &cfg, &e);
    EXPECT_ERR(rc, VIDI_ERR_UNSUPPORTED, e, "config.json", "LlamaForCausalLM");
}

static void test_mrope_section_mismatch(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("mrope-sum", BASE_2VL_FLAT, "rope_scaling.mrope_section", jparse("[2,3,4]"), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json: field 'rope_scaling.mrope_section'", "head_dim/2 is 8");
}

static void test_mrope_section_mismatch_in_rope_parameters(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("mrope-sum-nested", BASE_25VL_NESTED,
                                  "text_config.rope_parameters.mrope_section", jparse("[16,24,24]"), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "'text_config.rope_parameters.mrope_section'", "sums to 64");
}

static void test_mrope_section_missing(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("mrope-missing", BASE_2VL_FLAT, "rope_scaling.mrope_section", NULL, &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "mrope_section");
    rc = load_changed("rope-missing", BASE_2VL_FLAT, "rope_scaling", NULL, &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'rope_scaling.mrope_section'");
}

static void test_mrope_section_wrong_length(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("mrope-len", BASE_2VL_FLAT, "rope_scaling.mrope_section", jparse("[4,4]"), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "mrope_section");
}

static void test_unsupported_rope_type(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("rope-yarn", BASE_2VL_FLAT, "rope_scaling.type", json_string("yarn"), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_UNSUPPORTED, e, "config.json", "'yarn'");
}

static void test_heads_do_not_divide_hidden(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("heads", BASE_2VL_FLAT, "num_attention_heads", json_integer(5), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'num_attention_heads'");
}

static void test_kv_heads_do_not_divide_heads(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("kv-heads", BASE_25VL_NESTED, "text_config.num_key_value_heads",
                                  json_integer(3), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'text_config.num_key_value_heads'");
}

static void test_non_positive_size(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("zero-size", BASE_2VL_FLAT, "intermediate_size", json_integer(0), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_RANGE, e, "config.json: field 'intermediate_size'", NULL);
    rc = load_changed("neg-depth", BASE_2VL_FLAT, "vision_config.depth", json_integer(-2), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_RANGE, e, "config.json", "'vision_config.depth'");
}

static void test_vision_output_differs_from_text_hidden(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("merger-out", BASE_25VL_NESTED, "vision_config.out_hidden_size",
                                  json_integer(48), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'vision_config.out_hidden_size'");
}

static void test_vision_heads_do_not_divide_width(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("vision-heads", BASE_2VL_FLAT, "vision_config.num_heads", json_integer(3), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'vision_config.num_heads'");
}

static void test_fullatt_index_out_of_range(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("fullatt", BASE_25VL_NESTED, "vision_config.fullatt_block_indexes",
                                  jparse("[1,4]"), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_RANGE, e, "'vision_config.fullatt_block_indexes'", "block 4");
}

static void test_window_size_not_a_multiple(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("window", BASE_25VL_NESTED, "vision_config.window_size", json_integer(50), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'vision_config.window_size'");
}

static void test_unsupported_vision_activation(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("act", BASE_25VL_NESTED, "vision_config.hidden_act", json_string("relu2"), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_UNSUPPORTED, e, "'vision_config.hidden_act'", "'relu2'");
}

static void test_sliding_window_refused(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("sliding", BASE_2VL_FLAT, "use_sliding_window", json_true(), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_UNSUPPORTED, e, "config.json", "'use_sliding_window'");
}

static void test_eos_wrong_type(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc = load_changed("eos-type", BASE_2VL_FLAT, "eos_token_id", json_string("</s>"), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "config.json", "'eos_token_id'");
}

static void test_token_id_outside_vocab(void) {
    vidi_model_config c;
    vidi_err e = {0};
    vidi_status rc =
        load_changed("token-range", BASE_2VL_FLAT, "image_token_id", json_integer(999999), &c, &e);
    EXPECT_ERR(rc, VIDI_ERR_RANGE, e, "config.json", "'image_token_id'");
}

/* ---- preprocessor_config.json ---- */

static void test_preproc_defaults_when_missing(void) {
    vidi_preproc_config p;
    vidi_err e = {0};
    vidi_status rc = vidi_preproc_config_load(write_case("pre-none", NULL, NULL, NULL), &p, &e);
    REQUIRE(rc == VIDI_OK, "%s", e.msg);
    CHECK(p.min_pixels == 3136 && p.max_pixels == 12845056 && p.patch_size == 14 && p.merge_size == 2 &&
              p.temporal_patch_size == 2,
          "sizes");
    CHECK(fabs(p.rescale_factor - 1.0 / 255.0) < 1e-12 && p.image_mean[0] == 0.48145466f &&
              p.image_std[2] == 0.27577711f,
          "normalisation");
}

static void test_preproc_min_max_pixels(void) {
    vidi_preproc_config p;
    vidi_err e = {0};
    const char *dir = write_case("pre-pixels", NULL, NULL,
                                 jparse("{\"min_pixels\":1024,\"max_pixels\":200704,\"patch_size\":16,"
                                        "\"merge_size\":2,\"temporal_patch_size\":2,\"rescale_factor\":0.5,"
                                        "\"image_mean\":[0.5,0.5,0.5],\"image_std\":[0.25,0.5,1]}"));
    vidi_status rc = vidi_preproc_config_load(dir, &p, &e);
    REQUIRE(rc == VIDI_OK, "%s", e.msg);
    CHECK(p.min_pixels == 1024 && p.max_pixels == 200704 && p.patch_size == 16 && p.rescale_factor == 0.5,
          "values");
    CHECK(p.image_mean[1] == 0.5f && p.image_std[0] == 0.25f && p.image_std[2] == 1.0f, "mean/std");
}

static void test_preproc_size_edges(void) {
    vidi_preproc_config p;
    vidi_err e = {0};
    const char *dir = write_case("pre-size", NULL, NULL,
                                 jparse("{\"size\":{\"shortest_edge\":4096,\"longest_edge\":1003520}}"));
    vidi_status rc = vidi_preproc_config_load(dir, &p, &e);
    CHECK(rc == VIDI_OK && p.min_pixels == 4096 && p.max_pixels == 1003520, "size.*_edge: %s", e.msg);
    dir =
        write_case("pre-size-override", NULL, NULL,
                   jparse("{\"size\":{\"shortest_edge\":4096,\"longest_edge\":1003520},\"max_pixels\":501760,"
                          "\"min_pixels\":null}"));
    rc = vidi_preproc_config_load(dir, &p, &e);
    CHECK(rc == VIDI_OK && p.min_pixels == 4096 && p.max_pixels == 501760, "max_pixels overrides size: %s",
          e.msg);
}

static void test_preproc_min_above_max(void) {
    vidi_preproc_config p;
    vidi_err e = {0};
    const char *dir =
        write_case("pre-minmax", NULL, NULL, jparse("{\"min_pixels\":5000,\"max_pixels\":4000}"));
    vidi_status rc = vidi_preproc_config_load(dir, &p, &e);
    EXPECT_ERR(rc, VIDI_ERR_RANGE, e, "preprocessor_config.json", "min_pixels");
}

static void test_preproc_bad_mean(void) {
    vidi_preproc_config p;
    vidi_err e = {0};
    const char *dir = write_case("pre-mean", NULL, NULL, jparse("{\"image_mean\":[0.5,0.5]}"));
    vidi_status rc = vidi_preproc_config_load(dir, &p, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "preprocessor_config.json", "'image_mean'");
    dir = write_case("pre-std", NULL, NULL, jparse("{\"image_std\":[0.5,0,0.5]}"));
    rc = vidi_preproc_config_load(dir, &p, &e);
    EXPECT_ERR(rc, VIDI_ERR_RANGE, e, "preprocessor_config.json", "'image_std'");
}

/* ---- generation_config.json ---- */

static void test_generation_defaults_when_missing(void) {
    vidi_generation_config g;
    vidi_err e = {0};
    vidi_status rc = vidi_generation_config_load(write_case("gen-none", NULL, NULL, NULL), &g, &e);
    REQUIRE(rc == VIDI_OK, "%s", e.msg);
    CHECK(g.do_sample == 0 && g.temperature == 1.0f && g.top_k == 0 && g.top_p == 1.0f &&
              g.repetition_penalty == 1.0f && g.n_eos == 0,
          "defaults");
}

static void test_generation_values(void) {
    vidi_generation_config g;
    vidi_err e = {0};
    const char *dir = write_case("gen-values", NULL,
                                 jparse("{\"do_sample\":true,\"temperature\":0.1,\"top_k\":1,\"top_p\":0.001,"
                                        "\"repetition_penalty\":1.05,\"eos_token_id\":[151645,151643]}"),
                                 NULL);
    vidi_status rc = vidi_generation_config_load(dir, &g, &e);
    REQUIRE(rc == VIDI_OK, "%s", e.msg);
    CHECK(g.do_sample == 1 && g.temperature == 0.1f && g.top_k == 1 && g.top_p == 0.001f &&
              g.repetition_penalty == 1.05f,
          "sampling");
    CHECK(g.n_eos == 2 && g.eos_token_ids[0] == 151645 && g.eos_token_ids[1] == 151643, "eos list");
}

static void test_generation_wrong_type(void) {
    vidi_generation_config g;
    vidi_err e = {0};
    const char *dir = write_case("gen-type", NULL, jparse("{\"temperature\":\"hot\"}"), NULL);
    vidi_status rc = vidi_generation_config_load(dir, &g, &e);
    EXPECT_ERR(rc, VIDI_ERR_FORMAT, e, "generation_config.json", "'temperature'");
    dir = write_case("gen-range", NULL, jparse("{\"top_p\":1.5}"), NULL);
    rc = vidi_generation_config_load(dir, &g, &e);
    EXPECT_ERR(rc, VIDI_ERR_RANGE, e, "generation_config.json", "'top_p'");
}

/* ---- the tiny test models, when present ---- */

static int tiny_present(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", test_data_path(name));
    return access(path, R_OK) == 0;
}

static void test_tiny_qwen2vl_config(void) {
    if (!tiny_present("models/tiny-qwen2vl")) {
        printf("skip: tests/data/models/tiny-qwen2vl not generated yet\n");
        return;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_data_path("models/tiny-qwen2vl"));
    vidi_model_config c;
    vidi_preproc_config p;
    vidi_generation_config g;
    vidi_err e = {0};
    REQUIRE(vidi_model_config_load(dir, &c, &e) == VIDI_OK, "config: %s", e.msg);
    CHECK(c.arch == VIDI_ARCH_QWEN2_VL && c.text.tie_word_embeddings == 1, "flat, tied Qwen2-VL");
    CHECK(c.text.head_dim * c.text.num_heads == c.text.hidden_size, "head_dim");
    CHECK(c.text.mrope_section[0] + c.text.mrope_section[1] + c.text.mrope_section[2] == c.text.head_dim / 2,
          "mrope");
    CHECK(c.vision.out_hidden_size == c.text.hidden_size && c.vision.hidden_act == VIDI_ACT_QUICK_GELU,
          "vision");
    CHECK(c.image_token_id < c.text.vocab_size && c.n_eos >= 1, "tokens");
    REQUIRE(vidi_preproc_config_load(dir, &p, &e) == VIDI_OK, "preproc: %s", e.msg);
    CHECK(p.patch_size == c.vision.patch_size && p.merge_size == c.vision.spatial_merge_size,
          "preproc matches");
    REQUIRE(vidi_generation_config_load(dir, &g, &e) == VIDI_OK, "generation: %s", e.msg);
}

static void test_tiny_qwen25vl_config(void) {
    if (!tiny_present("models/tiny-qwen25vl")) {
        printf("skip: tests/data/models/tiny-qwen25vl not generated yet\n");
        return;
    }
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", test_data_path("models/tiny-qwen25vl"));
    vidi_model_config c;
    vidi_preproc_config p;
    vidi_generation_config g;
    vidi_err e = {0};
    REQUIRE(vidi_model_config_load(dir, &c, &e) == VIDI_OK, "config: %s", e.msg);
    CHECK(c.arch == VIDI_ARCH_QWEN2_5_VL && c.text.tie_word_embeddings == 0, "nested, untied Qwen2.5-VL");
    CHECK(c.text.mrope_section[0] + c.text.mrope_section[1] + c.text.mrope_section[2] == c.text.head_dim / 2,
          "mrope");
    CHECK(c.vision.hidden_act == VIDI_ACT_SILU && c.vision.n_fullatt > 0 && c.vision.window_size > 0,
          "vision");
    for (int i = 0; i < c.vision.n_fullatt; i++)
        CHECK(c.vision.fullatt_block_indexes[i] < c.vision.depth, "fullatt in range");
    REQUIRE(vidi_preproc_config_load(dir, &p, &e) == VIDI_OK, "preproc: %s", e.msg);
    REQUIRE(vidi_generation_config_load(dir, &g, &e) == VIDI_OK, "generation: %s", e.msg);
}

int main(int argc, char **argv) {
    if (!test_tmpdir()) return 1;
    static const test_case cases[] = {
        {"flat_qwen2vl", test_flat_qwen2vl},
        {"nested_qwen25vl", test_nested_qwen25vl},
        {"nested_qwen2vl", test_nested_qwen2vl},
        {"flat_qwen25vl", test_flat_qwen25vl},
        {"rope_parameters_beside_rope_scaling", test_rope_parameters_beside_rope_scaling},
        {"architectures_when_model_type_missing", test_architectures_when_model_type_missing},
        {"tie_word_embeddings_forms", test_tie_word_embeddings_forms},
        {"explicit_head_dim", test_explicit_head_dim},
        {"token_ids_default_when_absent", test_token_ids_default_when_absent},
        {"vision_defaults", test_vision_defaults},
        {"eos_int_or_list_from_both_files", test_eos_int_or_list_from_both_files},
        {"missing_config", test_missing_config},
        {"config_bad_json", test_config_bad_json},
        {"config_not_object", test_config_not_object},
        {"generation_config_bad_json", test_generation_config_bad_json},
        {"missing_field_flat", test_missing_field_flat},
        {"missing_field_nested", test_missing_field_nested},
        {"missing_vision_config", test_missing_vision_config},
        {"missing_vision_field", test_missing_vision_field},
        {"wrong_type_string_for_integer", test_wrong_type_string_for_integer},
        {"wrong_type_for_boolean", test_wrong_type_for_boolean},
        {"wrong_type_for_text_config", test_wrong_type_for_text_config},
        {"unknown_model_type", test_unknown_model_type},
        {"unknown_architecture_without_model_type", test_unknown_architecture_without_model_type},
        {"mrope_section_mismatch", test_mrope_section_mismatch},
        {"mrope_section_mismatch_in_rope_parameters", test_mrope_section_mismatch_in_rope_parameters},
        {"mrope_section_missing", test_mrope_section_missing},
        {"mrope_section_wrong_length", test_mrope_section_wrong_length},
        {"unsupported_rope_type", test_unsupported_rope_type},
        {"heads_do_not_divide_hidden", test_heads_do_not_divide_hidden},
        {"kv_heads_do_not_divide_heads", test_kv_heads_do_not_divide_heads},
        {"non_positive_size", test_non_positive_size},
        {"vision_output_differs_from_text_hidden", test_vision_output_differs_from_text_hidden},
        {"vision_heads_do_not_divide_width", test_vision_heads_do_not_divide_width},
        {"fullatt_index_out_of_range", test_fullatt_index_out_of_range},
        {"window_size_not_a_multiple", test_window_size_not_a_multiple},
        {"unsupported_vision_activation", test_unsupported_vision_activation},
        {"sliding_window_refused", test_sliding_window_refused},
        {"eos_wrong_type", test_eos_wrong_type},
        {"token_id_outside_vocab", test_token_id_outside_vocab},
        {"preproc_defaults_when_missing", test_preproc_defaults_when_missing},
        {"preproc_min_max_pixels", test_preproc_min_max_pixels},
        {"preproc_size_edges", test_preproc_size_edges},
        {"preproc_min_above_max", test_preproc_min_above_max},
        {"preproc_bad_mean", test_preproc_bad_mean},
        {"generation_defaults_when_missing", test_generation_defaults_when_missing},
        {"generation_values", test_generation_values},
        {"generation_wrong_type", test_generation_wrong_type},
        {"tiny_qwen2vl_config", test_tiny_qwen2vl_config},
        {"tiny_qwen25vl_config", test_tiny_qwen25vl_config},
    };
    int rc = test_main(argc, argv, cases, (int)(sizeof cases / sizeof cases[0]));
    return rc;
}
