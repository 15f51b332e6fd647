/* model/config.c — reading config.json, preprocessor_config.json and
 * generation_config.json of a Qwen2-VL / Qwen2.5-VL folder (see config.h).
 *
 * Text fields are looked up in "text_config" first (the nested form of
 * checkpoints re-saved by newer transformers), then at the top level (the
 * original flat form). Rope settings may sit in "rope_parameters"
 * (transformers 5) or "rope_scaling". JSON null counts as absent.
 */
#include "model/config.h"

#include "core/json.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CFG_PATH_MAX 4096

/* Where a field may be found: an object and the prefix that names it in
 * messages ("text_config."). */
typedef struct cfg_src {
    json_t *obj;
    const char *prefix;
} cfg_src;

typedef struct cfg_ctx {
    const char *file;
    vidi_err *err;
} cfg_ctx;

/* The first non-null `key` among the sources; *prefix says where it was
 * found, or where it was looked for first when absent. */
static json_t *cfg_find(const cfg_src *src, int n, const char *key, const char **prefix) {
    *prefix = n > 0 ? src[0].prefix : "";
    for (int i = 0; i < n; i++) {
        if (!src[i].obj) continue;
        json_t *v = json_object_get(src[i].obj, key);
        if (v && !json_is_null(v)) {
            *prefix = src[i].prefix;
            return v;
        }
    }
    for (int i = 0; i < n; i++) {
        if (src[i].obj) {
            *prefix = src[i].prefix;
            break;
        }
    }
    return NULL;
}

/* An integer field in [lo, hi]. Integral reals (4.0) are accepted. When the
 * field is absent: an error if `required`, else *out = def. */
static vidi_status cfg_i64(const cfg_ctx *c, const cfg_src *src, int n, const char *key, int required,
                           int64_t def, int64_t lo, int64_t hi, int64_t *out) {
    const char *pre;
    json_t *v = cfg_find(src, n, key, &pre);
    if (!v) {
        if (required)
            return vidi_err_set(c->err, VIDI_ERR_FORMAT, "%s: missing field '%s%s'", c->file, pre, key);
        *out = def;
        return VIDI_OK;
    }
    int64_t x;
    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e18) {
        x = (int64_t)json_real_value(v);
    } else {
        return vidi_err_set(c->err, VIDI_ERR_FORMAT, "%s: field '%s%s' is %s, not an integer", c->file, pre,
                            key, vidi_json_kind(v));
    }
    if (x < lo || x > hi)
        return vidi_err_set(c->err, VIDI_ERR_RANGE, "%s: field '%s%s' is %lld, outside [%lld, %lld]", c->file,
                            pre, key, (long long)x, (long long)lo, (long long)hi);
    *out = x;
    return VIDI_OK;
}

static vidi_status cfg_int(const cfg_ctx *c, const cfg_src *src, int n, const char *key, int required,
                           int def, int lo, int hi, int *out) {
    int64_t x;
    vidi_status rc = cfg_i64(c, src, n, key, required, def, lo, hi, &x);
    if (rc == VIDI_OK) *out = (int)x;
    return rc;
}

/* A number field in [lo, hi] (integers accepted). */
static vidi_status cfg_num(const cfg_ctx *c, const cfg_src *src, int n, const char *key, int required,
                           double def, double lo, double hi, double *out) {
    const char *pre;
    json_t *v = cfg_find(src, n, key, &pre);
    if (!v) {
        if (required)
            return vidi_err_set(c->err, VIDI_ERR_FORMAT, "%s: missing field '%s%s'", c->file, pre, key);
        *out = def;
        return VIDI_OK;
    }
    if (!json_is_number(v))
        return vidi_err_set(c->err, VIDI_ERR_FORMAT, "%s: field '%s%s' is %s, not a number", c->file, pre,
                            key, vidi_json_kind(v));
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return vidi_err_set(c->err, VIDI_ERR_RANGE, "%s: field '%s%s' is %g, outside [%g, %g]", c->file, pre,
                            key, x, lo, hi);
    *out = x;
    return VIDI_OK;
}

static vidi_status cfg_bool(const cfg_ctx *c, const cfg_src *src, int n, const char *key, int def, int *out) {
    const char *pre;
    json_t *v = cfg_find(src, n, key, &pre);
    if (!v) {
        *out = def;
        return VIDI_OK;
    }
    if (!json_is_boolean(v))
        return vidi_err_set(c->err, VIDI_ERR_FORMAT, "%s: field '%s%s' is %s, not true or false", c->file,
                            pre, key, vidi_json_kind(v));
    *out = json_is_true(v);
    return VIDI_OK;
}

/* A string field; *out = NULL when absent. */
static vidi_status cfg_str(const cfg_ctx *c, const cfg_src *src, int n, const char *key, const char **out) {
    const char *pre;
    json_t *v = cfg_find(src, n, key, &pre);
    *out = NULL;
    if (!v) return VIDI_OK;
    if (!json_is_string(v))
        return vidi_err_set(c->err, VIDI_ERR_FORMAT, "%s: field '%s%s' is %s, not a string", c->file, pre,
                            key, vidi_json_kind(v));
    *out = json_string_value(v);
    return VIDI_OK;
}

/* An object field; *out = NULL when absent. */
static vidi_status cfg_obj(const cfg_ctx *c, const cfg_src *src, int n, const char *key, json_t **out,
                           const char **prefix) {
    json_t *v = cfg_find(src, n, key, prefix);
    *out = NULL;
    if (!v) return VIDI_OK;
    if (!json_is_object(v))
        return vidi_err_set(c->err, VIDI_ERR_FORMAT, "%s: field '%s%s' is %s, not an object", c->file,
                            *prefix, key, vidi_json_kind(v));
    *out = v;
    return VIDI_OK;
}

/* Read a JSON object file. A missing file is VIDI_ERR_NOTFOUND, or OK with
 * *out = NULL when `optional`. */
static vidi_status load_json(const char *path, int optional, json_t **out, vidi_err *err) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (optional && errno == ENOENT) return VIDI_OK;
        return vidi_err_set(err, errno == ENOENT ? VIDI_ERR_NOTFOUND : VIDI_ERR_IO, "%s: cannot open: %s",
                            path, strerror(errno));
    }
    json_error_t je;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return vidi_err_set(err, VIDI_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", path,
                            je.text, je.line, je.column);
    if (!json_is_object(j)) {
        vidi_status rc = vidi_err_set(err, VIDI_ERR_FORMAT, "%s: %s, not a JSON object", path, vidi_json_kind(j));
        json_decref(j);
        return rc;
    }
    *out = j;
    return VIDI_OK;
}

static vidi_status join_path(char *buf, const char *dir, const char *name, vidi_err *err) {
    int w = snprintf(buf, CFG_PATH_MAX, "%s/%s", dir, name);
    if (w < 0 || w >= CFG_PATH_MAX)
        return vidi_err_set(err, VIDI_ERR_RANGE, "%s: path too long for '%s'", dir, name);
    return VIDI_OK;
}

/* Add the end-of-sequence ids of `key` (an integer or a list of them) to
 * ids[*n], skipping duplicates. */
static vidi_status cfg_eos(const cfg_ctx *c, const cfg_src *src, int nsrc, const char *key, int32_t *ids,
                           int *n) {
    const char *pre;
    json_t *v = cfg_find(src, nsrc, key, &pre);
    if (!v) return VIDI_OK;
    size_t count = json_is_array(v) ? json_array_size(v) : 1;
    for (size_t i = 0; i < count; i++) {
        json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_integer(e))
            return vidi_err_set(c->err, VIDI_ERR_FORMAT,
                                "%s: field '%s%s' must be an integer or a list of integers", c->file, pre,
                                key);
        json_int_t id = json_integer_value(e);
        if (id < 0 || id > INT32_MAX)
            return vidi_err_set(c->err, VIDI_ERR_RANGE, "%s: field '%s%s' holds token id %lld", c->file, pre,
                                key, (long long)id);
        int dup = 0;
        for (int k = 0; k < *n; k++)
            dup |= ids[k] == (int32_t)id;
        if (dup) continue;
        if (*n == VIDI_MAX_EOS)
            return vidi_err_set(c->err, VIDI_ERR_RANGE, "%s: field '%s%s': more than %d end-of-sequence ids",
                                c->file, pre, key, VIDI_MAX_EOS);
        ids[(*n)++] = (int32_t)id;
    }
    return VIDI_OK;
}

static vidi_status parse_act(const cfg_ctx *c, const char *field, const char *s, vidi_act *out) {
    if (!strcmp(s, "quick_gelu"))
        *out = VIDI_ACT_QUICK_GELU;
    else if (!strcmp(s, "silu") || !strcmp(s, "swish"))
        *out = VIDI_ACT_SILU;
    else if (!strcmp(s, "gelu"))
        *out = VIDI_ACT_GELU_ERF;
    else if (!strcmp(s, "gelu_pytorch_tanh") || !strcmp(s, "gelu_new") || !strcmp(s, "gelu_fast"))
        *out = VIDI_ACT_GELU_TANH;
    else
        return vidi_err_set(c->err, VIDI_ERR_UNSUPPORTED, "%s: field '%s' is '%s', an unsupported activation",
                            c->file, field, s);
    return VIDI_OK;
}

#define CFG_BIG (1 << 24) /* upper bound for sizes: far above any real model */

static vidi_status parse_text(const cfg_ctx *c, json_t *root, json_t *tc, vidi_text_config *t) {
    vidi_status rc = VIDI_OK;
    cfg_src src[2] = {{tc, "text_config."}, {root, ""}};
    int ns = 2;
    if (!tc) src[0] = src[1], ns = 1;

    VIDI_TRY(cfg_int(c, src, ns, "hidden_size", 1, 0, 1, CFG_BIG, &t->hidden_size));
    VIDI_TRY(cfg_int(c, src, ns, "intermediate_size", 1, 0, 1, CFG_BIG, &t->intermediate_size));
    VIDI_TRY(cfg_int(c, src, ns, "num_hidden_layers", 1, 0, 1, 4096, &t->num_layers));
    VIDI_TRY(cfg_int(c, src, ns, "num_attention_heads", 1, 0, 1, 65536, &t->num_heads));
    VIDI_TRY(cfg_int(c, src, ns, "num_key_value_heads", 0, t->num_heads, 1, 65536, &t->num_kv_heads));
    VIDI_TRY(cfg_int(c, src, ns, "vocab_size", 1, 0, 1, INT32_MAX, &t->vocab_size));
    VIDI_TRY(
        cfg_int(c, src, ns, "max_position_embeddings", 0, 32768, 1, INT32_MAX, &t->max_position_embeddings));
    double eps, theta;
    VIDI_TRY(cfg_num(c, src, ns, "rms_norm_eps", 0, 1e-6, 1e-30, 1.0, &eps));
    t->rms_norm_eps = (float)eps;

    const char *pre = tc ? "text_config." : "";
    if (cfg_find(src, ns, "head_dim", &pre)) {
        VIDI_TRY(cfg_int(c, src, ns, "head_dim", 1, 0, 2, 65536, &t->head_dim));
    } else {
        VIDI_CHECK(t->hidden_size % t->num_heads == 0, c->err, VIDI_ERR_FORMAT,
                   "%s: field '%snum_attention_heads' (%d) does not divide hidden_size (%d)", c->file, pre,
                   t->num_heads, t->hidden_size);
        t->head_dim = t->hidden_size / t->num_heads;
    }
    VIDI_CHECK(t->num_heads % t->num_kv_heads == 0, c->err, VIDI_ERR_FORMAT,
               "%s: field '%snum_key_value_heads' (%d) does not divide num_attention_heads (%d)", c->file,
               pre, t->num_kv_heads, t->num_heads);
    VIDI_CHECK(t->head_dim % 2 == 0, c->err, VIDI_ERR_FORMAT, "%s: head_dim %d is odd", c->file, t->head_dim);

    const char *act;
    VIDI_TRY(cfg_str(c, src, ns, "hidden_act", &act));
    VIDI_CHECK(!act || !strcmp(act, "silu"), c->err, VIDI_ERR_UNSUPPORTED,
               "%s: field 'hidden_act' is '%s'; the Qwen2 text model uses silu", c->file, act);
    int sliding = 0;
    VIDI_TRY(cfg_bool(c, src, ns, "use_sliding_window", 0, &sliding));
    VIDI_CHECK(!sliding, c->err, VIDI_ERR_UNSUPPORTED,
               "%s: field 'use_sliding_window' is true; sliding-window attention is not supported", c->file);
    VIDI_TRY(cfg_bool(c, src, ns, "tie_word_embeddings", 0, &t->tie_word_embeddings));

    /* rope: rope_parameters (transformers 5) or rope_scaling, whichever
     * holds mrope_section (rope_parameters when both or neither do) */
    json_t *params = NULL, *scaling = NULL, *rope;
    const char *params_pre = pre, *scaling_pre = pre, *rope_pre, *rope_key;
    VIDI_TRY(cfg_obj(c, src, ns, "rope_parameters", &params, &params_pre));
    VIDI_TRY(cfg_obj(c, src, ns, "rope_scaling", &scaling, &scaling_pre));
    json_t *params_ms = params ? json_object_get(params, "mrope_section") : NULL;
    if (params && ((params_ms && !json_is_null(params_ms)) || !scaling)) {
        rope = params, rope_pre = params_pre, rope_key = "rope_parameters";
    } else {
        rope = scaling, rope_pre = scaling_pre, rope_key = "rope_scaling";
    }
    char rp[96];
    snprintf(rp, sizeof rp, "%s%s.", rope_pre, rope_key);
    cfg_src rsrc[1] = {{rope, rp}};

    /* rope_theta: beside the other text fields, else in rope_parameters */
    const char *theta_pre;
    char pp[96];
    snprintf(pp, sizeof pp, "%srope_parameters.", params_pre);
    cfg_src psrc[1] = {{params, pp}};
    if (cfg_find(src, ns, "rope_theta", &theta_pre) || !params)
        VIDI_TRY(cfg_num(c, src, ns, "rope_theta", 0, 1e6, 1.0, 1e30, &theta));
    else
        VIDI_TRY(cfg_num(c, psrc, 1, "rope_theta", 0, 1e6, 1.0, 1e30, &theta));
    t->rope_theta = theta;

    VIDI_CHECK(rope, c->err, VIDI_ERR_FORMAT, "%s: missing field '%srope_scaling.mrope_section'", c->file,
               pre);
    const char *rtype = NULL;
    VIDI_TRY(cfg_str(c, rsrc, 1, "rope_type", &rtype));
    if (!rtype) VIDI_TRY(cfg_str(c, rsrc, 1, "type", &rtype));
    VIDI_CHECK(!rtype || !strcmp(rtype, "mrope") || !strcmp(rtype, "default"), c->err, VIDI_ERR_UNSUPPORTED,
               "%s: field '%stype' is '%s'; only mrope/default rope is supported", c->file, rp, rtype);
    json_t *ms = json_object_get(rope, "mrope_section");
    VIDI_CHECK(ms && !json_is_null(ms), c->err, VIDI_ERR_FORMAT, "%s: missing field '%smrope_section'",
               c->file, rp);
    VIDI_CHECK(json_is_array(ms) && json_array_size(ms) == 3, c->err, VIDI_ERR_FORMAT,
               "%s: field '%smrope_section' must be a list of 3 integers", c->file, rp);
    int sum = 0;
    for (int i = 0; i < 3; i++) {
        json_t *e = json_array_get(ms, (size_t)i);
        VIDI_CHECK(json_is_integer(e) && json_integer_value(e) > 0 && json_integer_value(e) <= 65536, c->err,
                   VIDI_ERR_FORMAT, "%s: field '%smrope_section' must be a list of 3 positive integers",
                   c->file, rp);
        t->mrope_section[i] = (int)json_integer_value(e);
        sum += t->mrope_section[i];
    }
    VIDI_CHECK(sum == t->head_dim / 2, c->err, VIDI_ERR_FORMAT,
               "%s: field '%smrope_section' [%d,%d,%d] sums to %d but head_dim/2 is %d", c->file, rp,
               t->mrope_section[0], t->mrope_section[1], t->mrope_section[2], sum, t->head_dim / 2);
fail:
    return rc;
}

static vidi_status parse_vision(const cfg_ctx *c, vidi_arch arch, json_t *root, const vidi_text_config *t,
                                vidi_vision_config *v) {
    vidi_status rc = VIDI_OK;
    json_t *vc = json_object_get(root, "vision_config");
    VIDI_CHECK(vc && !json_is_null(vc), c->err, VIDI_ERR_FORMAT, "%s: missing field 'vision_config'",
               c->file);
    VIDI_CHECK(json_is_object(vc), c->err, VIDI_ERR_FORMAT, "%s: field 'vision_config' is %s, not an object",
               c->file, vidi_json_kind(vc));
    cfg_src src[1] = {{vc, "vision_config."}};
    const char *act = NULL;

    VIDI_TRY(cfg_int(c, src, 1, "depth", 1, 0, 1, 4096, &v->depth));
    VIDI_TRY(cfg_int(c, src, 1, "num_heads", 1, 0, 1, 65536, &v->num_heads));
    if (arch == VIDI_ARCH_QWEN2_VL) {
        double ratio;
        VIDI_TRY(cfg_int(c, src, 1, "embed_dim", 1, 0, 1, CFG_BIG, &v->hidden_size));
        VIDI_TRY(cfg_num(c, src, 1, "mlp_ratio", 0, 4.0, 1e-3, 1024.0, &ratio));
        v->intermediate_size = (int)(v->hidden_size * ratio);
        VIDI_CHECK(v->intermediate_size > 0, c->err, VIDI_ERR_RANGE,
                   "%s: field 'vision_config.mlp_ratio' gives an empty MLP", c->file);
        /* in Qwen2-VL, vision_config.hidden_size is the merger's output */
        VIDI_TRY(cfg_int(c, src, 1, "hidden_size", 0, t->hidden_size, 1, CFG_BIG, &v->out_hidden_size));
        VIDI_TRY(cfg_str(c, src, 1, "hidden_act", &act));
        VIDI_TRY(parse_act(c, "vision_config.hidden_act", act ? act : "quick_gelu", &v->hidden_act));
    } else {
        VIDI_TRY(cfg_int(c, src, 1, "hidden_size", 1, 0, 1, CFG_BIG, &v->hidden_size));
        VIDI_TRY(cfg_int(c, src, 1, "intermediate_size", 1, 0, 1, CFG_BIG, &v->intermediate_size));
        VIDI_TRY(cfg_int(c, src, 1, "out_hidden_size", 0, t->hidden_size, 1, CFG_BIG, &v->out_hidden_size));
        VIDI_TRY(cfg_str(c, src, 1, "hidden_act", &act));
        VIDI_TRY(parse_act(c, "vision_config.hidden_act", act ? act : "silu", &v->hidden_act));
    }
    const char *pre;
    if (cfg_find(src, 1, "in_channels", &pre))
        VIDI_TRY(cfg_int(c, src, 1, "in_channels", 1, 3, 1, 64, &v->in_channels));
    else
        VIDI_TRY(cfg_int(c, src, 1, "in_chans", 0, 3, 1, 64, &v->in_channels));
    VIDI_TRY(cfg_int(c, src, 1, "patch_size", 0, 14, 1, 4096, &v->patch_size));
    VIDI_TRY(cfg_int(c, src, 1, "spatial_merge_size", 0, 2, 1, 64, &v->spatial_merge_size));
    VIDI_TRY(cfg_int(c, src, 1, "temporal_patch_size", 0, 2, 1, 64, &v->temporal_patch_size));
    v->norm_eps = 1e-6f;

    VIDI_CHECK(v->hidden_size % v->num_heads == 0, c->err, VIDI_ERR_FORMAT,
               "%s: field 'vision_config.num_heads' (%d) does not divide the vision width (%d)", c->file,
               v->num_heads, v->hidden_size);
    v->head_dim = v->hidden_size / v->num_heads;
    VIDI_CHECK(v->head_dim % 4 == 0, c->err, VIDI_ERR_FORMAT,
               "%s: vision head_dim %d (width / vision_config.num_heads) is not a multiple of 4 as the 2-D "
               "rotary embedding needs",
               c->file, v->head_dim);
    VIDI_CHECK(v->out_hidden_size == t->hidden_size, c->err, VIDI_ERR_FORMAT,
               "%s: field 'vision_config.%s' (%d) differs from the text hidden_size (%d)", c->file,
               arch == VIDI_ARCH_QWEN2_VL ? "hidden_size" : "out_hidden_size", v->out_hidden_size,
               t->hidden_size);

    if (arch == VIDI_ARCH_QWEN2_5_VL) {
        double tps;
        VIDI_TRY(cfg_int(c, src, 1, "window_size", 0, 112, 1, 1 << 20, &v->window_size));
        int unit = v->patch_size * v->spatial_merge_size;
        VIDI_CHECK(v->window_size % unit == 0, c->err, VIDI_ERR_FORMAT,
                   "%s: field 'vision_config.window_size' (%d) is not a multiple of patch_size * "
                   "spatial_merge_size (%d)",
                   c->file, v->window_size, unit);
        VIDI_TRY(cfg_num(c, src, 1, "tokens_per_second", 0, 4.0, 1e-6, 1e6, &tps));
        v->tokens_per_second = (float)tps;
        json_t *fa = json_object_get(vc, "fullatt_block_indexes");
        if (!fa || json_is_null(fa)) {
            static const int def[] = {7, 15, 23, 31};
            v->n_fullatt = 4;
            memcpy(v->fullatt_block_indexes, def, sizeof def);
        } else {
            VIDI_CHECK(json_is_array(fa), c->err, VIDI_ERR_FORMAT,
                       "%s: field 'vision_config.fullatt_block_indexes' is %s, not a list", c->file,
                       vidi_json_kind(fa));
            VIDI_CHECK(json_array_size(fa) <= VIDI_MAX_FULLATT, c->err, VIDI_ERR_RANGE,
                       "%s: field 'vision_config.fullatt_block_indexes' has more than %d entries", c->file,
                       VIDI_MAX_FULLATT);
            v->n_fullatt = (int)json_array_size(fa);
            for (int i = 0; i < v->n_fullatt; i++) {
                json_t *e = json_array_get(fa, (size_t)i);
                VIDI_CHECK(json_is_integer(e), c->err, VIDI_ERR_FORMAT,
                           "%s: field 'vision_config.fullatt_block_indexes' must hold integers", c->file);
                json_int_t b = json_integer_value(e);
                VIDI_CHECK(b >= 0 && b < v->depth, c->err, VIDI_ERR_RANGE,
                           "%s: field 'vision_config.fullatt_block_indexes' names block %lld but depth is %d",
                           c->file, (long long)b, v->depth);
                v->fullatt_block_indexes[i] = (int)b;
            }
        }
    }
fail:
    return rc;
}

vidi_status vidi_model_config_load(const char *model_dir, vidi_model_config *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    char path[CFG_PATH_MAX], gpath[CFG_PATH_MAX];
    json_t *root = NULL, *gen = NULL;
    memset(out, 0, sizeof *out);
    VIDI_TRY(join_path(path, model_dir, "config.json", err));
    VIDI_TRY(join_path(gpath, model_dir, "generation_config.json", err));
    VIDI_TRY(load_json(path, 0, &root, err));
    cfg_ctx c = {path, err};
    cfg_src top[1] = {{root, ""}};

    /* which model */
    const char *mt;
    VIDI_TRY(cfg_str(&c, top, 1, "model_type", &mt));
    if (mt) {
        if (!strcmp(mt, "qwen2_vl"))
            out->arch = VIDI_ARCH_QWEN2_VL;
        else if (!strcmp(mt, "qwen2_5_vl"))
            out->arch = VIDI_ARCH_QWEN2_5_VL;
        else
            VIDI_CHECK(0, err, VIDI_ERR_UNSUPPORTED,
                       "%s: field 'model_type' is '%s'; supported: qwen2_vl, qwen2_5_vl", path, mt);
    } else {
        json_t *ar = json_object_get(root, "architectures");
        json_t *a0 = json_is_array(ar) ? json_array_get(ar, 0) : NULL;
        const char *an = json_is_string(a0) ? json_string_value(a0) : NULL;
        if (an && !strcmp(an, "Qwen2VLForConditionalGeneration"))
            out->arch = VIDI_ARCH_QWEN2_VL;
        else if (an && !strcmp(an, "Qwen2_5_VLForConditionalGeneration"))
            out->arch = VIDI_ARCH_QWEN2_5_VL;
        else
            VIDI_CHECK(0, err, VIDI_ERR_UNSUPPORTED,
                       "%s: no field 'model_type' and field 'architectures' names %s%s%s, not "
                       "Qwen2VLForConditionalGeneration or Qwen2_5_VLForConditionalGeneration",
                       path, an ? "'" : "nothing known", an ? an : "", an ? "'" : "");
    }

    json_t *tc = NULL;
    const char *tpre;
    VIDI_TRY(cfg_obj(&c, top, 1, "text_config", &tc, &tpre));
    VIDI_TRY(parse_text(&c, root, tc, &out->text));
    VIDI_TRY(parse_vision(&c, out->arch, root, &out->text, &out->vision));

    /* special tokens: top level first, then text_config */
    cfg_src tok[2] = {{root, ""}, {tc, "text_config."}};
    int vocab = out->text.vocab_size;
    int id;
    VIDI_TRY(cfg_int(&c, tok, 2, "image_token_id", 0, 151655, 0, vocab - 1, &id));
    out->image_token_id = id;
    VIDI_TRY(cfg_int(&c, tok, 2, "video_token_id", 0, 151656, 0, vocab - 1, &id));
    out->video_token_id = id;
    VIDI_TRY(cfg_int(&c, tok, 2, "vision_start_token_id", 0, 151652, 0, vocab - 1, &id));
    out->vision_start_token_id = id;
    VIDI_TRY(cfg_int(&c, tok, 2, "vision_end_token_id", 0, 151653, 0, vocab - 1, &id));
    out->vision_end_token_id = id;

    /* end-of-sequence ids: config.json (both levels) and generation_config.json */
    VIDI_TRY(cfg_eos(&c, top, 1, "eos_token_id", out->eos_token_ids, &out->n_eos));
    if (tc)
        VIDI_TRY(cfg_eos(&c, (cfg_src[]){{tc, "text_config."}}, 1, "eos_token_id", out->eos_token_ids,
                         &out->n_eos));
    VIDI_TRY(load_json(gpath, 1, &gen, err));
    if (gen) {
        cfg_ctx gc = {gpath, err};
        VIDI_TRY(cfg_eos(&gc, (cfg_src[]){{gen, ""}}, 1, "eos_token_id", out->eos_token_ids, &out->n_eos));
    }
    for (int i = 0; i < out->n_eos; i++)
        VIDI_CHECK(out->eos_token_ids[i] < vocab, err, VIDI_ERR_RANGE,
                   "%s: eos_token_id %d is not below vocab_size %d", path, out->eos_token_ids[i], vocab);
fail:
    json_decref(gen);
    json_decref(root);
    return rc;
}

static const vidi_preproc_config preproc_defaults = {
    .min_pixels = 56 * 56,
    .max_pixels = 28 * 28 * 16384,
    .patch_size = 14,
    .merge_size = 2,
    .temporal_patch_size = 2,
    .rescale_factor = 1.0 / 255.0,
    .image_mean = {0.48145466f, 0.4578275f, 0.40821073f},
    .image_std = {0.26862954f, 0.26130258f, 0.27577711f},
};

/* image_mean / image_std: a list of 3 numbers or one number for all. */
static vidi_status cfg_rgb(const cfg_ctx *c, json_t *root, const char *key, int positive, float *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return VIDI_OK;
    for (int i = 0; i < 3; i++) {
        json_t *e = json_is_array(v) ? json_array_get(v, (size_t)i) : v;
        if (!json_is_number(e) || (json_is_array(v) && json_array_size(v) != 3))
            return vidi_err_set(c->err, VIDI_ERR_FORMAT, "%s: field '%s' must be a list of 3 numbers",
                                c->file, key);
        double x = json_number_value(e);
        if (positive && !(x > 0))
            return vidi_err_set(c->err, VIDI_ERR_RANGE, "%s: field '%s' holds %g, not positive", c->file, key,
                                x);
        out[i] = (float)x;
    }
    return VIDI_OK;
}

vidi_preproc_config vidi_preproc_config_default(void) { return preproc_defaults; }

vidi_status vidi_preproc_config_load(const char *model_dir, vidi_preproc_config *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    char path[CFG_PATH_MAX];
    json_t *root = NULL;
    *out = preproc_defaults;
    VIDI_TRY(join_path(path, model_dir, "preprocessor_config.json", err));
    VIDI_TRY(load_json(path, 1, &root, err));
    if (!root) return VIDI_OK;
    cfg_ctx c = {path, err};
    cfg_src top[1] = {{root, ""}};
    const int64_t big = (int64_t)1 << 40;

    /* size.{shortest,longest}_edge (newer files), overridden by min/max_pixels */
    json_t *size = NULL;
    const char *spre;
    VIDI_TRY(cfg_obj(&c, top, 1, "size", &size, &spre));
    if (size) {
        cfg_src ss[1] = {{size, "size."}};
        VIDI_TRY(cfg_i64(&c, ss, 1, "shortest_edge", 0, out->min_pixels, 1, big, &out->min_pixels));
        VIDI_TRY(cfg_i64(&c, ss, 1, "longest_edge", 0, out->max_pixels, 1, big, &out->max_pixels));
    }
    VIDI_TRY(cfg_i64(&c, top, 1, "min_pixels", 0, out->min_pixels, 1, big, &out->min_pixels));
    VIDI_TRY(cfg_i64(&c, top, 1, "max_pixels", 0, out->max_pixels, 1, big, &out->max_pixels));
    VIDI_CHECK(out->min_pixels <= out->max_pixels, err, VIDI_ERR_RANGE,
               "%s: min_pixels %lld is above max_pixels %lld", path, (long long)out->min_pixels,
               (long long)out->max_pixels);
    VIDI_TRY(cfg_int(&c, top, 1, "patch_size", 0, out->patch_size, 1, 4096, &out->patch_size));
    VIDI_TRY(cfg_int(&c, top, 1, "merge_size", 0, out->merge_size, 1, 64, &out->merge_size));
    VIDI_TRY(cfg_int(&c, top, 1, "temporal_patch_size", 0, out->temporal_patch_size, 1, 64,
                     &out->temporal_patch_size));
    VIDI_TRY(
        cfg_num(&c, top, 1, "rescale_factor", 0, out->rescale_factor, 1e-12, 1e12, &out->rescale_factor));
    VIDI_TRY(cfg_rgb(&c, root, "image_mean", 0, out->image_mean));
    VIDI_TRY(cfg_rgb(&c, root, "image_std", 1, out->image_std));
fail:
    json_decref(root);
    return rc;
}

vidi_status vidi_generation_config_load(const char *model_dir, vidi_generation_config *out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    char path[CFG_PATH_MAX];
    json_t *root = NULL;
    memset(out, 0, sizeof *out);
    out->temperature = 1.0f;
    out->top_k = 0;
    out->top_p = 1.0f;
    out->repetition_penalty = 1.0f;
    VIDI_TRY(join_path(path, model_dir, "generation_config.json", err));
    VIDI_TRY(load_json(path, 1, &root, err));
    if (!root) return VIDI_OK;
    cfg_ctx c = {path, err};
    cfg_src top[1] = {{root, ""}};
    double x;
    VIDI_TRY(cfg_bool(&c, top, 1, "do_sample", 0, &out->do_sample));
    VIDI_TRY(cfg_num(&c, top, 1, "temperature", 0, 1.0, 0.0, 1e6, &x));
    out->temperature = (float)x;
    VIDI_TRY(cfg_int(&c, top, 1, "top_k", 0, 0, 0, INT32_MAX, &out->top_k));
    VIDI_TRY(cfg_num(&c, top, 1, "top_p", 0, 1.0, 0.0, 1.0, &x));
    out->top_p = (float)x;
    VIDI_TRY(cfg_num(&c, top, 1, "repetition_penalty", 0, 1.0, 1e-6, 1e6, &x));
    out->repetition_penalty = (float)x;
    VIDI_TRY(cfg_eos(&c, top, 1, "eos_token_id", out->eos_token_ids, &out->n_eos));
fail:
    json_decref(root);
    return rc;
}
