/* tests/parity/test_vision_parity.c — the vision tower against the
 * embeddings transformers produced for one reference case.
 *
 * Usage: test_vision_parity <case dir> [test name filter]
 * The case's manifest.json names the model folder (relative to tests/data)
 * and its media items: processor pixels, grid and the reference vision
 * embeddings. Every item is encoded on the CPU backend and compared by max
 * abs diff; encoding all items in one call, and a video slice by slice,
 * must give the rows of encoding them one by one (to SPLIT_TOL). Exit 77 when the
 * reference data are missing.
 */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/npy.h"
#include "kernels/ops.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/model.h"
#include "model/vision.h"
#include "test_util.h"

#define PARITY_GOAL 1e-5 /* reported when exceeded */
#define PARITY_FAIL 1e-4 /* fails the test */
/* Rows of one item encoded with others, or a video slice encoded alone, go
 * through matmuls of another row count; OpenBLAS picks its kernel (and so
 * its summation order) by size, which moves results by a few 1e-6. A leak
 * between items or slices would show up orders of magnitude above this. */
#define SPLIT_TOL 1e-5
#define MAX_ITEMS 16

typedef struct media_item {
    char kind[16];
    int32_t grid[3];
    vidi_npy pixels;  /* [t*h*w, patch_dim] */
    vidi_npy embeds;  /* [t*h*w / merge^2, out_hidden] */
    float *ours;      /* this item encoded alone, host copy */
} media_item;

static struct {
    const char *case_dir;
    char model_dir[4096];
    vidi_model_config cfg;
    vidi_checkpoint *ck;
    vidi_backend *be;
    vidi_vision *vis;
    media_item items[MAX_ITEMS];
    int n_items;
} F;

/* Encode `n` items given by their pixel rows and grids on the fixture
 * tower; returns a malloc'd host copy of the output (NULL on failure,
 * reported). */
static float *encode_rows(const float *pixels, int64_t n_rows, const int32_t (*grids)[3], int n, int64_t *out_rows) {
    vidi_err err = {0};
    int64_t rows = vidi_vision_out_rows(F.vis, grids, n);
    int64_t cols = F.cfg.vision.out_hidden_size;
    size_t count = (size_t)(rows * cols);
    float *host = malloc(count * sizeof(float));
    void *dev = F.be->ops->buf_alloc(F.be, count * vidi_dtype_size(F.be->act_dtype));
    if (!host || !dev) {
        test_fail(__FILE__, __LINE__, "out of memory for %lld x %lld outputs", (long long)rows, (long long)cols);
        goto fail;
    }
    vidi_tensor out = vidi_tensor_2d(F.be->act_dtype, dev, rows, cols);
    if (vidi_vision_encode(F.vis, pixels, n_rows, grids, n, &out, &err) != VIDI_OK ||
        vidi_download_f32(F.be, host, dev, count, &err) != VIDI_OK) {
        test_fail(__FILE__, __LINE__, "encode: %s", err.msg);
        goto fail;
    }
    F.be->ops->buf_free(F.be, dev);
    *out_rows = rows;
    return host;
fail:
    if (dev) F.be->ops->buf_free(F.be, dev);
    free(host);
    return NULL;
}

static void test_each_item_matches_reference(void) {
    for (int i = 0; i < F.n_items; i++) {
        media_item *it = &F.items[i];
        int64_t rows = 0;
        it->ours = encode_rows(it->pixels.data, it->pixels.shape[0], (const int32_t(*)[3])&it->grid, 1, &rows);
        REQUIRE(it->ours, "item %d: no output", i);
        REQUIRE(rows == it->embeds.shape[0] && F.cfg.vision.out_hidden_size == it->embeds.shape[1],
                "item %d: output [%lld, %d], reference [%lld, %lld]", i, (long long)rows,
                F.cfg.vision.out_hidden_size, (long long)it->embeds.shape[0], (long long)it->embeds.shape[1]);
        double d = test_max_abs_diff(it->ours, it->embeds.data, (long)(rows * it->embeds.shape[1]));
        printf("  item %d (%s, grid %d x %d x %d): max abs diff %.3g%s\n", i, it->kind, it->grid[0], it->grid[1],
               it->grid[2], d, d > PARITY_GOAL ? " (above the 1e-5 goal)" : "");
        CHECK(d <= PARITY_FAIL, "item %d: max abs diff %g above %g", i, d, PARITY_FAIL);
    }
}

/* All items in one call give the rows of each item encoded alone. */
static void test_items_in_one_call_equal_separate(void) {
    int64_t n_rows = 0, patch_dim = F.items[0].pixels.shape[1];
    int32_t grids[MAX_ITEMS][3];
    for (int i = 0; i < F.n_items; i++) {
        REQUIRE(F.items[i].ours, "item %d was not encoded alone", i);
        REQUIRE(F.items[i].pixels.shape[1] == patch_dim, "items differ in patch size");
        n_rows += F.items[i].pixels.shape[0];
        memcpy(grids[i], F.items[i].grid, sizeof grids[i]);
    }
    float *pixels = malloc((size_t)(n_rows * patch_dim) * sizeof(float));
    REQUIRE(pixels, "out of memory");
    int64_t r = 0;
    for (int i = 0; i < F.n_items; i++) {
        size_t n = (size_t)(F.items[i].pixels.shape[0] * patch_dim);
        memcpy(pixels + r * patch_dim, F.items[i].pixels.data, n * sizeof(float));
        r += F.items[i].pixels.shape[0];
    }
    int64_t rows = 0;
    float *all = encode_rows(pixels, n_rows, (const int32_t(*)[3])grids, F.n_items, &rows);
    free(pixels);
    REQUIRE(all, "no output");
    int64_t cols = F.cfg.vision.out_hidden_size, o = 0;
    for (int i = 0; i < F.n_items; i++) {
        int64_t n = F.items[i].embeds.shape[0];
        double d = test_max_abs_diff(all + o * cols, F.items[i].ours, (long)(n * cols));
        printf("  item %d of %d in one call vs alone: max abs diff %.3g\n", i, F.n_items, d);
        CHECK(d <= SPLIT_TOL, "item %d: one call differs from alone by %g", i, d);
        o += n;
    }
    CHECK(o == rows, "one call gave %lld rows, the items %lld", (long long)rows, (long long)o);
    free(all);
}

/* A video encoded one temporal slice at a time gives the same rows. */
static void test_video_slices_equal_whole(void) {
    int m = F.cfg.vision.spatial_merge_size;
    for (int i = 0; i < F.n_items; i++) {
        media_item *it = &F.items[i];
        if (it->grid[0] < 2 || !it->ours) continue;
        int64_t slice_rows = (int64_t)it->grid[1] * it->grid[2], patch_dim = it->pixels.shape[1];
        int64_t out_per_slice = slice_rows / (m * m), cols = F.cfg.vision.out_hidden_size;
        int32_t grid[1][3] = {{1, it->grid[1], it->grid[2]}};
        double worst = 0;
        for (int t = 0; t < it->grid[0]; t++) {
            int64_t rows = 0;
            float *s = encode_rows((const float *)it->pixels.data + t * slice_rows * patch_dim, slice_rows,
                                   (const int32_t(*)[3])grid, 1, &rows);
            REQUIRE(s, "item %d slice %d: no output", i, t);
            double d = test_max_abs_diff(s, it->ours + t * out_per_slice * cols, (long)(rows * cols));
            if (d > worst) worst = d;
            free(s);
        }
        printf("  item %d (%d slices) slice by slice vs whole: max abs diff %.3g\n", i, it->grid[0], worst);
        CHECK(worst <= SPLIT_TOL, "item %d: slice-by-slice differs by %g", i, worst);
    }
}

static void test_bad_grids_are_errors(void) {
    media_item *it = &F.items[0];
    vidi_err err = {0};
    int64_t cols = F.cfg.vision.out_hidden_size;
    void *dev = F.be->ops->buf_alloc(F.be, (size_t)(it->embeds.shape[0] * cols) * sizeof(float));
    REQUIRE(dev, "out of memory");
    vidi_tensor out = vidi_tensor_2d(VIDI_DTYPE_F32, dev, it->embeds.shape[0], cols);
    int32_t odd[1][3] = {{it->grid[0], it->grid[1] + 1, it->grid[2]}};
    CHECK(vidi_vision_encode(F.vis, it->pixels.data, it->pixels.shape[0], (const int32_t(*)[3])odd, 1, &out,
                             &err) == VIDI_ERR_INVALID,
          "a height that is not a multiple of the merge size was accepted");
    CHECK(vidi_vision_encode(F.vis, it->pixels.data, it->pixels.shape[0] - 1, (const int32_t(*)[3])&it->grid, 1,
                             &out, &err) == VIDI_ERR_INVALID,
          "a pixel row count that does not match the grid was accepted");
    vidi_tensor small = vidi_tensor_2d(VIDI_DTYPE_F32, dev, it->embeds.shape[0] - 1, cols);
    CHECK(vidi_vision_encode(F.vis, it->pixels.data, it->pixels.shape[0], (const int32_t(*)[3])&it->grid, 1,
                             &small, &err) == VIDI_ERR_INVALID,
          "an output with the wrong row count was accepted");
    F.be->ops->buf_free(F.be, dev);
}

/* The path other backends take — weights copied into buffers the tower
 * owns, pixels copied in — run through the CPU ops on a backend that says its memory is not host memory. */
static void test_copied_weights_path_matches(void) {
    media_item *it = &F.items[0];
    REQUIRE(it->ours, "item 0 was not encoded alone");
    vidi_backend alias = *F.be;
    alias.name = "cpu-as-device";
    alias.host_memory = 0;
    vidi_vision *vis = NULL;
    vidi_err err = {0};
    REQUIRE(vidi_vision_load(&F.cfg, F.ck, &alias, &vis, &err) == VIDI_OK, "load: %s", err.msg);
    vidi_vision *keep = F.vis;
    F.vis = vis;
    int64_t rows = 0;
    float *y = encode_rows(it->pixels.data, it->pixels.shape[0], (const int32_t(*)[3])&it->grid, 1, &rows);
    F.vis = keep;
    vidi_vision_free(vis);
    REQUIRE(y, "no output");
    double d = test_max_abs_diff(y, it->ours, (long)(rows * F.cfg.vision.out_hidden_size));
    CHECK(d == 0, "copied weights give rows %g away from the mapped ones", d);
    free(y);
}

/* The path of the CUDA backend's weights: copied (host_memory 0) and
 * converted to bf16 (weight_dtype BF16, from the f32 checkpoint), norm
 * weights and biases included; activations stay f32 on the CPU ops. Every
 * item against the reference within BF16_W_TOL_REL * max|ref| +
 * BF16_W_TOL_ABS (bf16 keeps 8 significant bits: a relative rounding of
 * 2^-9 per weight). */
#define BF16_W_TOL_REL 5e-2
#define BF16_W_TOL_ABS 2e-2
static void test_bf16_weights_path_within_tolerance(void) {
    vidi_backend alias = *F.be;
    alias.name = "cpu-as-device-bf16";
    alias.host_memory = 0;
    alias.weight_dtype = VIDI_DTYPE_BF16;
    vidi_vision *vis = NULL;
    vidi_err err = {0};
    REQUIRE(vidi_vision_load(&F.cfg, F.ck, &alias, &vis, &err) == VIDI_OK, "load: %s", err.msg);
    vidi_vision *keep = F.vis;
    F.vis = vis;
    for (int i = 0; i < F.n_items; i++) {
        media_item *it = &F.items[i];
        int64_t rows = 0;
        float *y = encode_rows(it->pixels.data, it->pixels.shape[0], (const int32_t(*)[3])&it->grid, 1, &rows);
        CHECK(y, "item %d: no output", i);
        if (!y) continue;
        long n = (long)(rows * F.cfg.vision.out_hidden_size);
        double d = test_max_abs_diff(y, it->embeds.data, n), ref_max = 0;
        for (long j = 0; j < n; j++) {
            double a = fabs(((const float *)it->embeds.data)[j]);
            if (a > ref_max) ref_max = a;
        }
        double tol = BF16_W_TOL_REL * ref_max + BF16_W_TOL_ABS;
        printf("  item %d, bf16 weights: max abs diff %.3g (max|ref| %.3g, tolerance %.3g)\n", i, d, ref_max,
               tol);
        CHECK(d <= tol, "item %d: bf16 weights give max abs diff %g above %g", i, d, tol);
        free(y);
    }
    F.vis = keep;
    vidi_vision_free(vis);
}

/* A config that disagrees with the checkpoint fails to load, naming the
 * tensor. */
static void test_mismatched_config_names_the_tensor(void) {
    vidi_model_config cfg = F.cfg;
    vidi_vision *vis = NULL;
    vidi_err err = {0};
    cfg.vision.intermediate_size += 2;
    CHECK(vidi_vision_load(&cfg, F.ck, F.be, &vis, &err) == VIDI_ERR_FORMAT && !vis,
          "a wrong intermediate size was accepted");
    CHECK(strstr(err.msg, "blocks.0.mlp."), "the error does not name the MLP weight: %s", err.msg);
    cfg = F.cfg;
    cfg.arch = cfg.arch == VIDI_ARCH_QWEN2_VL ? VIDI_ARCH_QWEN2_5_VL : VIDI_ARCH_QWEN2_VL;
    if (cfg.vision.window_size == 0) cfg.vision.window_size = 112;
    CHECK(vidi_vision_load(&cfg, F.ck, F.be, &vis, &err) == VIDI_ERR_NOTFOUND && !vis,
          "the other architecture's weights were found");
    CHECK(strstr(err.msg, "visual.blocks.0."), "the error does not name the missing weight: %s", err.msg);
}

/* ---------------------------------------------------------------- fixture */

static int read_manifest(const char *case_dir, vidi_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", case_dir);
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &jerr);
    if (!root) {
        vidi_err_set(err, VIDI_ERR_FORMAT, "%s: %s", path, jerr.text);
        return -1;
    }
    int rc = -1;
    const char *model = json_string_value(json_object_get(root, "model"));
    json_t *media = json_object_get(root, "media");
    if (json_is_array(media) && json_array_size(media) == 0) {
        vidi_err_set(err, VIDI_ERR_NOTFOUND, "%s: no media items", path);
        goto done;
    }
    if (!model || !json_is_array(media) || json_array_size(media) > MAX_ITEMS) {
        vidi_err_set(err, VIDI_ERR_FORMAT, "%s: needs \"model\" and 1..%d \"media\"", path, MAX_ITEMS);
        goto done;
    }
    snprintf(F.model_dir, sizeof F.model_dir, "%s", test_data_path(model));
    for (size_t i = 0; i < json_array_size(media); i++) {
        json_t *m = json_array_get(media, i), *grid = json_object_get(m, "grid");
        const char *kind = json_string_value(json_object_get(m, "kind"));
        const char *px = json_string_value(json_object_get(m, "pixels"));
        const char *ve = json_string_value(json_object_get(m, "vision_embeds"));
        if (!px || !ve || !json_is_array(grid) || json_array_size(grid) != 3) {
            vidi_err_set(err, VIDI_ERR_FORMAT, "%s: media %zu needs pixels, vision_embeds and grid", path, i);
            goto done;
        }
        media_item *it = &F.items[F.n_items++];
        snprintf(it->kind, sizeof it->kind, "%s", kind ? kind : "?");
        for (int k = 0; k < 3; k++) it->grid[k] = (int32_t)json_integer_value(json_array_get(grid, k));
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", case_dir, px);
        if (vidi_npy_read(p, &it->pixels, err) != VIDI_OK) goto done;
        snprintf(p, sizeof p, "%s/%s", case_dir, ve);
        if (vidi_npy_read(p, &it->embeds, err) != VIDI_OK) goto done;
        if (it->pixels.dtype != VIDI_DTYPE_F32 || it->pixels.ndim != 2 || it->embeds.dtype != VIDI_DTYPE_F32 ||
            it->embeds.ndim != 2 || it->pixels.shape[0] != (int64_t)it->grid[0] * it->grid[1] * it->grid[2]) {
            vidi_err_set(err, VIDI_ERR_FORMAT, "%s: media %zu: pixels/embeds are not f32 2-D arrays of the grid",
                         path, i);
            goto done;
        }
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

static void fixture_free(void) {
    for (int i = 0; i < F.n_items; i++) {
        vidi_npy_free(&F.items[i].pixels);
        vidi_npy_free(&F.items[i].embeds);
        free(F.items[i].ours);
    }
    vidi_vision_free(F.vis);
    if (F.be) F.be->ops->destroy(F.be);
    vidi_checkpoint_close(F.ck);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s <case dir> [test filter]\n", argv[0]);
        return 2;
    }
    F.case_dir = argv[1];
    char path[8192];
    snprintf(path, sizeof path, "%s/manifest.json", F.case_dir);
    if (access(path, R_OK) != 0) {
        printf("skip: no %s\n", path);
        return 77;
    }
    vidi_err err = {0};
    if (read_manifest(F.case_dir, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        fixture_free();
        return err.status == VIDI_ERR_NOTFOUND || err.status == VIDI_ERR_IO ? 77 : 1;
    }
    snprintf(path, sizeof path, "%s/config.json", F.model_dir);
    if (access(path, R_OK) != 0) {
        printf("skip: no model at %s\n", F.model_dir);
        fixture_free();
        return 77;
    }
    if (vidi_model_config_load(F.model_dir, &F.cfg, &err) != VIDI_OK ||
        vidi_checkpoint_open(F.model_dir, &F.ck, &err) != VIDI_OK ||
        !(F.be = vidi_backend_cpu_create(0, &err)) ||
        vidi_vision_load(&F.cfg, F.ck, F.be, &F.vis, &err) != VIDI_OK) {
        fprintf(stderr, "loading %s: %s\n", F.model_dir, err.msg);
        fixture_free();
        return 1;
    }
    printf("%s: %s, %d item(s)\n", F.case_dir, F.model_dir, F.n_items);
    static const test_case cases[] = {
        {"each_item_matches_reference", test_each_item_matches_reference},
        {"items_in_one_call_equal_separate", test_items_in_one_call_equal_separate},
        {"video_slices_equal_whole", test_video_slices_equal_whole},
        {"bad_grids_are_errors", test_bad_grids_are_errors},
        {"copied_weights_path_matches", test_copied_weights_path_matches},
        {"bf16_weights_path_within_tolerance", test_bf16_weights_path_within_tolerance},
        {"mismatched_config_names_the_tensor", test_mismatched_config_names_the_tensor},
    };
    int rc = test_main(argc - 1, argv + 1, cases, (int)(sizeof cases / sizeof cases[0]));
    fixture_free();
    return rc;
}
