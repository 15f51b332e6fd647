/* decode/decode.c — continuous batching over a paged KV pool (decode.h). */
#include "decode/decode.h"

#include <stdlib.h>
#include <string.h>

#include "model/mrope.h"

typedef struct dec_slot {
    uint64_t tag;
    vidi_kv_seq *seq;
    int32_t pending;         /* sampled, not yet in the KV */
    int n_out;
    int64_t rope_delta;
    uint64_t rng;
    int64_t joined;          /* order of arrival: the youngest is preempted first */
    vidi_decode_params p;
} dec_slot;

struct vidi_decoder {
    vidi_model *m;
    vidi_kv_pool *pool;
    int cap, n;
    int64_t arrivals;
    dec_slot *slots;
    vidi_kv_seq **seqs;
    int32_t *ids, *pos;
    void *logit_buf;
};

vidi_status vidi_decoder_create(vidi_model *m, vidi_kv_pool *pool, int max_batch, vidi_decoder **out,
                                vidi_err *err) {
    vidi_status rc = VIDI_OK;
    *out = NULL;
    vidi_decoder *d = calloc(1, sizeof *d);
    VIDI_CHECK(d, err, VIDI_ERR_NOMEM, "decoder: out of memory");
    VIDI_CHECK(max_batch > 0, err, VIDI_ERR_INVALID, "decoder: max_batch %d must be positive", max_batch);
    d->m = m;
    d->pool = pool;
    d->cap = max_batch;
    d->slots = calloc((size_t)max_batch, sizeof *d->slots);
    d->seqs = calloc((size_t)max_batch, sizeof *d->seqs);
    d->ids = calloc((size_t)max_batch, sizeof *d->ids);
    d->pos = calloc((size_t)max_batch * 3, sizeof *d->pos);
    vidi_backend *be = m->be;
    d->logit_buf = be->ops->buf_alloc(be, (size_t)max_batch * (size_t)m->cfg.text.vocab_size *
                                              vidi_dtype_size(be->act_dtype));
    VIDI_CHECK(d->slots && d->seqs && d->ids && d->pos && d->logit_buf, err, VIDI_ERR_NOMEM,
               "decoder: out of memory for a batch of %d", max_batch);
    *out = d;
    return VIDI_OK;
fail:
    vidi_decoder_free(d);
    return rc;
}

void vidi_decoder_free(vidi_decoder *d) {
    if (!d) return;
    for (int i = 0; i < d->n; i++) vidi_kv_seq_free(d->slots[i].seq);
    if (d->logit_buf) d->m->be->ops->buf_free(d->m->be, d->logit_buf);
    free(d->slots);
    free(d->seqs);
    free(d->ids);
    free(d->pos);
    free(d);
}

vidi_decode_state vidi_decode_check(const vidi_model_config *cfg, const vidi_decode_params *p, int32_t token,
                                    int n_out) {
    if (p->stop_at_eos)
        for (int i = 0; i < cfg->n_eos; i++)
            if (cfg->eos_token_ids[i] == token) return VIDI_DECODE_STOP;
    for (int i = 0; i < p->n_stop_ids; i++)
        if (p->stop_ids[i] == token) return VIDI_DECODE_STOP;
    return n_out >= p->max_tokens ? VIDI_DECODE_LENGTH : VIDI_DECODE_RUNNING;
}

vidi_status vidi_decoder_add(vidi_decoder *d, uint64_t tag, vidi_kv_seq *seq, int32_t last_token, int n_out,
                             int64_t rope_delta, uint64_t rng, const vidi_decode_params *p, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    VIDI_CHECK(p->n_stop_ids >= 0 && p->n_stop_ids <= VIDI_DECODE_MAX_STOP_IDS && p->max_tokens > 0, err,
               VIDI_ERR_INVALID, "decoder: bad parameters");
    VIDI_CHECK(vidi_decode_check(&d->m->cfg, p, last_token, n_out) == VIDI_DECODE_RUNNING, err, VIDI_ERR_INVALID,
               "decoder: the sequence is already done");
    VIDI_CHECK(d->n < d->cap, err, VIDI_ERR_RANGE, "decoder: the batch is full (%d sequences)", d->cap);
    dec_slot *s = &d->slots[d->n++];
    s->tag = tag;
    s->seq = seq;
    s->pending = last_token;
    s->n_out = n_out;
    s->rope_delta = rope_delta;
    s->rng = rng;
    s->joined = d->arrivals++;
    s->p = *p;
    return VIDI_OK;
fail:
    vidi_kv_seq_free(seq);
    return rc;
}

int vidi_decoder_running(const vidi_decoder *d) { return d->n; }
int vidi_decoder_capacity(const vidi_decoder *d) { return d->cap; }

static void s_remove(vidi_decoder *d, int i) {
    vidi_kv_seq_free(d->slots[i].seq);
    d->slots[i] = d->slots[--d->n];
}

int vidi_decoder_cancel(vidi_decoder *d, uint64_t tag) {
    for (int i = 0; i < d->n; i++)
        if (d->slots[i].tag == tag) {
            s_remove(d, i);
            return 1;
        }
    return 0;
}

vidi_status vidi_decoder_step(vidi_decoder *d, vidi_decode_event *ev, int *n_ev, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = d->m->be;
    int64_t V = d->m->cfg.text.vocab_size;
    size_t row = (size_t)V * vidi_dtype_size(be->act_dtype);
    *n_ev = 0;
    /* Preempt the youngest until every sequence has room for its next token. */
    for (;;) {
        int64_t need = 0;
        for (int i = 0; i < d->n; i++) {
            int64_t len = vidi_kv_seq_len(d->slots[i].seq);
            need += vidi_kv_pool_blocks_for(d->pool, len + 1) - vidi_kv_pool_blocks_for(d->pool, len);
        }
        if (d->n == 0 || need <= vidi_kv_pool_free_blocks(d->pool)) break;
        int y = 0;
        for (int i = 1; i < d->n; i++)
            if (d->slots[i].joined > d->slots[y].joined) y = i;
        ev[*n_ev] = (vidi_decode_event){d->slots[y].tag, -1, d->slots[y].n_out, VIDI_DECODE_PREEMPTED};
        (*n_ev)++;
        s_remove(d, y);
    }
    if (d->n == 0) return VIDI_OK;
    for (int i = 0; i < d->n; i++) {
        dec_slot *s = &d->slots[i];
        d->seqs[i] = s->seq;
        d->ids[i] = s->pending;
        vidi_mrope_decode_position(vidi_kv_seq_len(s->seq), s->rope_delta, d->pos + 3 * i);
    }
    vidi_tensor logits = vidi_tensor_2d(be->act_dtype, d->logit_buf, d->n, V);
    VIDI_TRY(vidi_text_decode_batch(d->m->text, d->pool, d->n, d->seqs, d->ids, d->pos, &logits, 1, err));
    int first = *n_ev;
    for (int i = 0; i < d->n; i++) {
        dec_slot *s = &d->slots[i];
        vidi_tensor one = vidi_tensor_2d(be->act_dtype, (char *)d->logit_buf + (size_t)i * row, 1, V);
        int32_t tok;
        VIDI_TRY(be->ops->sample(be, &one, &s->p.sample, &s->rng, &tok, err));
        s->pending = tok;
        s->n_out++;
        vidi_decode_state st = vidi_decode_check(&d->m->cfg, &s->p, tok, s->n_out);
        ev[(*n_ev)++] = (vidi_decode_event){s->tag, tok, s->n_out - 1, st};
    }
    /* the finished leave (from the end, so indices stay valid; slot i's event is first + i) */
    for (int i = d->n - 1; i >= 0; i--)
        if (ev[first + i].state != VIDI_DECODE_RUNNING) s_remove(d, i);
fail:
    return rc;
}
