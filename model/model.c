/* model/model.c — load a Hugging Face folder: configuration, mapped
 * checkpoint, vision tower and text model on one backend (see model.h). */
#include "model/model.h"

#include <stdlib.h>

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
