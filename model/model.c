/* model/model.c — load a Hugging Face folder: configuration, mapped
 * checkpoint, vision tower and text model on one backend (see model.h). */
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

#include "model/text.h"

vidi_status vidi_model_load(const char *model_dir, vidi_backend *be, vidi_model **out, vidi_err *err) {
    vidi_status rc;
    vidi_model *m = NULL;
    *out = NULL;
    VIDI_CHECK(model_dir && be, err, VIDI_ERR_INVALID, "model: no folder or backend given");
    m = calloc(1, sizeof *m);
    VIDI_CHECK(m, err, VIDI_ERR_NOMEM, "model: out of memory");
    m->be = be;
    VIDI_TRY(vidi_model_config_load(model_dir, &m->cfg, err));
    VIDI_TRY(vidi_checkpoint_open(model_dir, &m->ck, err));
    VIDI_TRY(vidi_vision_load(&m->cfg, m->ck, be, &m->vision, err));
    VIDI_TRY(vidi_text_load(&m->cfg, m->ck, be, &m->text, err));
    *out = m;
    return VIDI_OK;
fail:
    vidi_err_prefix(err, "loading the model in %s", model_dir ? model_dir : "(null)");
    vidi_model_free(m);
    return rc;
}

void vidi_model_free(vidi_model *m) {
    if (!m) return;
    vidi_text_free(m->text);
    vidi_vision_free(m->vision);
    vidi_checkpoint_close(m->ck);
    free(m);
}

/* ---- host <-> backend ---- */

/* Values converted per staging round (bounds the host memory used). */
#define MODEL_STAGE_ELEMS ((size_t)1 << 22)

static int model_float_dtype(vidi_dtype dt) {
    return dt == VIDI_DTYPE_F32 || dt == VIDI_DTYPE_BF16 || dt == VIDI_DTYPE_F16;
}

/* Copy n values of dtype `from` (host) into backend memory as dtype `to`,
 * converting through f32 in rounds of MODEL_STAGE_ELEMS. Waits for the
 * copies before returning (the staging memory is reused and freed). */
static vidi_status model_upload_convert(vidi_backend *be, void *dst, vidi_dtype to, const void *src,
                                        vidi_dtype from, size_t n, vidi_err *err) {
    vidi_status rc;
    size_t es_to = vidi_dtype_size(to), es_from = vidi_dtype_size(from);
    if (be->ops->upload_convert) {
        /* converted into the backend's pinned staging (host threads), copies
         * overlapped; waited for, as the callers promise a landed copy */
        VIDI_TRY(be->ops->upload_convert(be, dst, to, src, from, n, err));
        return be->ops->synchronize(be, err);
    }
    if (from == to) {
        VIDI_TRY(be->ops->copy_to_device(be, dst, src, n * es_to, err));
        return be->ops->synchronize(be, err);
    }
    size_t chunk = n < MODEL_STAGE_ELEMS ? n : MODEL_STAGE_ELEMS;
    float *f = from == VIDI_DTYPE_F32 ? NULL : malloc((chunk ? chunk : 1) * sizeof *f);
    void *o = to == VIDI_DTYPE_F32 ? NULL : malloc((chunk ? chunk : 1) * es_to);
    if ((from != VIDI_DTYPE_F32 && !f) || (to != VIDI_DTYPE_F32 && !o)) {
        free(f);
        free(o);
        return vidi_err_set(err, VIDI_ERR_NOMEM, "out of host memory staging %zu values", chunk);
    }
    rc = VIDI_OK;
    for (size_t i = 0; i < n && rc == VIDI_OK; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        const float *fv = (const float *)((const char *)src + i * es_from);
        if (f) {
            vidi_convert_to_f32(from, (const char *)src + i * es_from, f, m);
            fv = f;
        }
        const void *out = fv;
        if (o) {
            vidi_convert_from_f32(to, fv, o, m);
            out = o;
        }
        rc = be->ops->copy_to_device(be, (char *)dst + i * es_to, out, m * es_to, err);
        /* the staging is rewritten next round: the copy must have landed */
        if (rc == VIDI_OK) rc = be->ops->synchronize(be, err);
    }
    free(f);
    free(o);
    return rc;
fail:
    return rc;
}

vidi_status vidi_weight_upload_to(vidi_backend *be, vidi_tensor *t, void *dst, vidi_err *err) {
    vidi_dtype to = be->weight_dtype;
    if (be->host_memory)
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "weight upload into a buffer: the %s backend uses "
                            "weights in place", be->name);
    if (!model_float_dtype(t->dtype) || !model_float_dtype(to))
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "a %s weight cannot be uploaded as %s to the "
                            "%s backend", vidi_dtype_name(t->dtype), vidi_dtype_name(to), be->name);
    size_t n = (size_t)vidi_tensor_numel(t);
    vidi_status rc = model_upload_convert(be, dst, to, t->data, t->dtype, n, err);
    if (rc != VIDI_OK) return rc;
    t->data = dst;
    t->dtype = to;
    return VIDI_OK;
}

vidi_status vidi_weight_upload(vidi_backend *be, vidi_tensor *t, void **owned, vidi_err *err) {
    *owned = NULL;
    if (be->host_memory) return VIDI_OK;
    vidi_dtype to = be->weight_dtype;
    if (!model_float_dtype(t->dtype) || !model_float_dtype(to))
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "a %s weight cannot be uploaded as %s to the "
                            "%s backend", vidi_dtype_name(t->dtype), vidi_dtype_name(to), be->name);
    size_t n = (size_t)vidi_tensor_numel(t), bytes = n * vidi_dtype_size(to);
    void *p = be->ops->buf_alloc(be, bytes ? bytes : 1);
    if (!p)
        return vidi_err_set(err, VIDI_ERR_NOMEM, "cannot allocate %zu bytes of %s memory for "
                            "weights", bytes, be->name);
    vidi_status rc = model_upload_convert(be, p, to, t->data, t->dtype, n, err);
    if (rc != VIDI_OK) {
        be->ops->buf_free(be, p);
        return rc;
    }
    t->data = p;
    t->dtype = to;
    *owned = p;
    return VIDI_OK;
}

vidi_status vidi_upload_f32(vidi_backend *be, void *dst, const float *src, size_t n, vidi_err *err) {
    if (!model_float_dtype(be->act_dtype))
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "backend %s has activation dtype %s",
                            be->name, vidi_dtype_name(be->act_dtype));
    return model_upload_convert(be, dst, be->act_dtype, src, VIDI_DTYPE_F32, n, err);
}

vidi_status vidi_download_f32(vidi_backend *be, float *dst, const void *src, size_t n, vidi_err *err) {
    vidi_dtype dt = be->act_dtype;
    if (dt == VIDI_DTYPE_F32) return be->ops->copy_to_host(be, dst, src, n * sizeof(float), err);
    if (!model_float_dtype(dt))
        return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "backend %s has activation dtype %s",
                            be->name, vidi_dtype_name(dt));
    size_t es = vidi_dtype_size(dt);
    size_t chunk = n < MODEL_STAGE_ELEMS ? n : MODEL_STAGE_ELEMS;
    void *tmp = malloc((chunk ? chunk : 1) * es);
    if (!tmp) return vidi_err_set(err, VIDI_ERR_NOMEM, "out of host memory staging %zu values", chunk);
    vidi_status rc = VIDI_OK;
    for (size_t i = 0; i < n && rc == VIDI_OK; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        rc = be->ops->copy_to_host(be, tmp, (const char *)src + i * es, m * es, err);
        if (rc == VIDI_OK) vidi_convert_to_f32(dt, tmp, dst + i, m);
    }
    free(tmp);
    return rc;
}
