/* model/checkpoint.c — the tensors of a Hugging Face model folder over one
 * or more memory-mapped safetensors files (see checkpoint.h). */
#include "model/checkpoint.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"
#include "model/safetensors.h"

#define CK_SINGLE "model.safetensors"
#define CK_INDEX "model.safetensors.index.json"
#define CK_PATH_MAX 4096

typedef struct ck_entry {
    const char *name;          /* the name in the file (owned by the shard) */
    const vidi_st_file *file;
    const vidi_st_info *info;
} ck_entry;

struct vidi_checkpoint {
    char *dir;
    int n_files;
    vidi_st_file **files;
    int n;
    ck_entry *entries;         /* sorted by name */
};

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const ck_entry *)a)->name, ((const ck_entry *)b)->name);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static vidi_status join_path(char *buf, const char *dir, const char *name, vidi_err *err) {
    int w = snprintf(buf, CK_PATH_MAX, "%s/%s", dir, name);
    if (w < 0 || w >= CK_PATH_MAX)
        return vidi_err_set(err, VIDI_ERR_RANGE, "%s: path too long for '%s'", dir, name);
    return VIDI_OK;
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static vidi_status add_file(vidi_checkpoint *ck, const char *path, vidi_st_file **out, vidi_err *err) {
    vidi_st_file **files = realloc(ck->files, (size_t)(ck->n_files + 1) * sizeof *files);
    if (!files) return vidi_err_set(err, VIDI_ERR_NOMEM, "%s: out of memory", path);
    ck->files = files;
    vidi_status rc = vidi_st_open(path, &ck->files[ck->n_files], err);
    if (rc != VIDI_OK) return rc;
    *out = ck->files[ck->n_files++];
    return VIDI_OK;
}

static vidi_status open_single(vidi_checkpoint *ck, const char *path, vidi_err *err) {
    vidi_st_file *f = NULL;
    vidi_status rc = add_file(ck, path, &f, err);
    if (rc != VIDI_OK) return rc;
    int n = vidi_st_count(f);
    ck->entries = calloc(n ? (size_t)n : 1, sizeof *ck->entries);
    if (!ck->entries) return vidi_err_set(err, VIDI_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < n; i++) {
        const vidi_st_info *info = vidi_st_at(f, i);
        ck->entries[i] = (ck_entry){info->name, f, info};
    }
    ck->n = n; /* vidi_st_at is already in name order */
    return VIDI_OK;
}

/* A shard name must be a plain file name inside the folder. */
static int shard_name_ok(const char *s) {
    return s[0] != '\0' && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..");
}

static vidi_status open_index(vidi_checkpoint *ck, const char *index_path, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    json_error_t jerr;
    const char **shards = NULL;
    char path[CK_PATH_MAX];
    json_t *root = json_load_file(index_path, JSON_REJECT_DUPLICATES, &jerr);
    VIDI_CHECK(root, err, VIDI_ERR_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", index_path,
               jerr.text, jerr.line, jerr.column);
    VIDI_CHECK(json_is_object(root), err, VIDI_ERR_FORMAT, "%s: not a JSON object", index_path);
    json_t *meta = json_object_get(root, "metadata");
    VIDI_CHECK(!meta || json_is_object(meta) || json_is_null(meta), err, VIDI_ERR_FORMAT,
               "%s: \"metadata\" is not an object", index_path);
    json_t *wm = json_object_get(root, "weight_map");
    VIDI_CHECK(wm, err, VIDI_ERR_FORMAT, "%s: missing \"weight_map\"", index_path);
    VIDI_CHECK(json_is_object(wm), err, VIDI_ERR_FORMAT, "%s: \"weight_map\" is not an object",
               index_path);

    /* the distinct shard names, validated */
    size_t n = json_object_size(wm), n_shards = 0;
    VIDI_CHECK(n > 0, err, VIDI_ERR_FORMAT, "%s: \"weight_map\" is empty", index_path);
    VIDI_CHECK(n <= (size_t)INT32_MAX, err, VIDI_ERR_RANGE, "%s: too many tensors", index_path);
    shards = malloc(n * sizeof *shards);
    ck->entries = calloc(n, sizeof *ck->entries);
    VIDI_CHECK(shards && ck->entries, err, VIDI_ERR_NOMEM, "%s: out of memory", index_path);
    const char *name;
    json_t *v;
    json_object_foreach(wm, name, v) {
        VIDI_CHECK(json_is_string(v), err, VIDI_ERR_FORMAT,
                   "%s: weight_map entry for tensor '%s' is not a string", index_path, name);
        const char *s = json_string_value(v);
        VIDI_CHECK(shard_name_ok(s), err, VIDI_ERR_FORMAT,
                   "%s: tensor '%s': shard name '%s' is not a plain file name in the folder",
                   index_path, name, s);
        shards[n_shards++] = s;
    }
    qsort(shards, n_shards, sizeof *shards, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n_shards; i++)
        if (u == 0 || strcmp(shards[u - 1], shards[i]) != 0) shards[u++] = shards[i];
    n_shards = u;

    /* open each shard once; ck->files[i] belongs to shards[i] */
    for (size_t i = 0; i < n_shards; i++) {
        VIDI_TRY(join_path(path, ck->dir, shards[i], err));
        VIDI_CHECK(is_file(path), err, VIDI_ERR_NOTFOUND,
                   "%s: shard '%s' is listed in the weight_map but %s does not exist", index_path,
                   shards[i], path);
        vidi_st_file *f = NULL;
        VIDI_TRY(add_file(ck, path, &f, err));
    }

    /* every weight_map entry must be in its shard */
    json_object_foreach(wm, name, v) {
        const char *s = json_string_value(v);
        const char **hit = bsearch(&s, shards, n_shards, sizeof *shards, cmp_str);
        VIDI_CHECK(hit, err, VIDI_ERR_INTERNAL, "%s: shard '%s' lost", index_path, s);
        const vidi_st_file *f = ck->files[hit - shards];
        const vidi_st_info *info = vidi_st_find(f, name);
        VIDI_CHECK(info, err, VIDI_ERR_FORMAT,
                   "%s: weight_map puts tensor '%s' in '%s', but %s has no such tensor", index_path,
                   name, s, vidi_st_path(f));
        ck->entries[ck->n++] = (ck_entry){info->name, f, info};
    }
    qsort(ck->entries, (size_t)ck->n, sizeof *ck->entries, cmp_entry);

    int in_shards = 0;
    for (int i = 0; i < ck->n_files; i++) in_shards += vidi_st_count(ck->files[i]);
    if (in_shards != ck->n)
        VIDI_LOGI("%s: the shards hold %d tensors, the weight_map lists %d; using the weight_map",
                  index_path, in_shards, ck->n);
fail:
    free(shards);
    json_decref(root);
    return rc;
}

vidi_status vidi_checkpoint_open(const char *model_dir, vidi_checkpoint **out, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    char path[CK_PATH_MAX];
    vidi_checkpoint *ck = calloc(1, sizeof *ck);
    *out = NULL;
    VIDI_CHECK(ck, err, VIDI_ERR_NOMEM, "%s: out of memory", model_dir);
    ck->dir = strdup(model_dir);
    VIDI_CHECK(ck->dir, err, VIDI_ERR_NOMEM, "%s: out of memory", model_dir);

    struct stat st;
    int found = stat(model_dir, &st) == 0;
    VIDI_CHECK(found && S_ISDIR(st.st_mode), err, VIDI_ERR_NOTFOUND, "%s: not a model folder (%s)",
               model_dir, found ? "not a directory" : strerror(errno));
    VIDI_TRY(join_path(path, model_dir, CK_SINGLE, err));
    if (is_file(path)) {
        VIDI_TRY(open_single(ck, path, err));
    } else {
        VIDI_TRY(join_path(path, model_dir, CK_INDEX, err));
        VIDI_CHECK(is_file(path), err, VIDI_ERR_NOTFOUND, "%s: no %s and no %s", model_dir, CK_SINGLE,
                   CK_INDEX);
        VIDI_TRY(open_index(ck, path, err));
    }
    *out = ck;
    return VIDI_OK;
fail:
    vidi_checkpoint_close(ck);
    return rc;
}

void vidi_checkpoint_close(vidi_checkpoint *ck) {
    if (!ck) return;
    for (int i = 0; i < ck->n_files; i++) vidi_st_close(ck->files[i]);
    free(ck->files);
    free(ck->entries);
    free(ck->dir);
    free(ck);
}

static const ck_entry *find_exact(const vidi_checkpoint *ck, const char *name) {
    ck_entry key = {.name = name};
    return ck->n ? bsearch(&key, ck->entries, (size_t)ck->n, sizeof *ck->entries, cmp_entry) : NULL;
}

/* The alias of a canonical name in re-saved checkpoints, or 0 when none. */
static int alias_name(const char *name, char *buf, size_t cap) {
    int w = -1;
    if (!strncmp(name, "model.", 6))
        w = snprintf(buf, cap, "model.language_model.%s", name + 6);
    else if (!strncmp(name, "visual.", 7))
        w = snprintf(buf, cap, "model.visual.%s", name + 7);
    return w > 0 && (size_t)w < cap;
}

static const ck_entry *resolve(const vidi_checkpoint *ck, const char *name) {
    const ck_entry *e = find_exact(ck, name);
    char alias[1024];
    if (!e && alias_name(name, alias, sizeof alias)) e = find_exact(ck, alias);
    return e;
}

int vidi_checkpoint_has(const vidi_checkpoint *ck, const char *name) {
    return resolve(ck, name) != NULL;
}

vidi_status vidi_checkpoint_get(const vidi_checkpoint *ck, const char *name, int ndim,
                                const int64_t *shape, vidi_tensor *out, vidi_err *err) {
    const ck_entry *e = resolve(ck, name);
    if (!e) {
        char alias[1024];
        if (alias_name(name, alias, sizeof alias))
            return vidi_err_set(err, VIDI_ERR_NOTFOUND, "%s: no tensor '%s' (nor '%s')", ck->dir, name,
                                alias);
        return vidi_err_set(err, VIDI_ERR_NOTFOUND, "%s: no tensor '%s'", ck->dir, name);
    }
    vidi_tensor t;
    vidi_status rc = vidi_st_view(e->file, e->info, &t, err);
    if (rc != VIDI_OK) return rc;
    if (ndim > 0) {
        int same = ndim == e->info->ndim;
        for (int i = 0; same && i < ndim; i++) same = shape[i] == e->info->shape[i];
        if (!same) {
            char want[128], have[128];
            vidi_st_shape_str(want, sizeof want, ndim, shape);
            vidi_st_shape_str(have, sizeof have, e->info->ndim, e->info->shape);
            return vidi_err_set(err, VIDI_ERR_FORMAT,
                                "%s: tensor '%s': expected shape %s but the file has %s",
                                vidi_st_path(e->file), e->name, want, have);
        }
    }
    *out = t;
    return VIDI_OK;
}

int vidi_checkpoint_count(const vidi_checkpoint *ck) { return ck->n; }

const char *vidi_checkpoint_name(const vidi_checkpoint *ck, int i) {
    return i >= 0 && i < ck->n ? ck->entries[i].name : NULL;
}
