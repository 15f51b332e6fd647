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

/* A sequence swapped out to host memory: its slot (seq NULL) and its KV in
 * the hand-off layout of vidi_kv_seq_export. */
typedef struct dec_out {
    dec_slot slot;
    void *kv;
    int64_t len;
    size_t bytes;
} dec_out;

struct vidi_decoder {
    vidi_model *m;
    vidi_kv_pool *pool;
    int cap, n;
    int64_t arrivals;
    dec_slot *slots;
    dec_out *outs;           /* n_out swapped-out sequences (cap) */
    int n_out;
    uint64_t swap_budget, swap_used;
    vidi_decoder_stats st;
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
    d->outs = calloc((size_t)max_batch, sizeof *d->outs);
    vidi_backend *be = m->be;
    d->logit_buf = be->ops->buf_alloc(be, (size_t)max_batch * (size_t)m->cfg.text.vocab_size *
                                              vidi_dtype_size(be->act_dtype));
    VIDI_CHECK(d->slots && d->seqs && d->ids && d->pos && d->outs && d->logit_buf, err, VIDI_ERR_NOMEM,
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
    for (int i = 0; i < d->n_out; i++) free(d->outs[i].kv);
    free(d->outs);
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
    VIDI_CHECK(d->n + d->n_out < d->cap, err, VIDI_ERR_RANGE, "decoder: the batch is full (%d sequences)", d->cap);
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

int vidi_decoder_running(const vidi_decoder *d) { return d->n + d->n_out; }
int vidi_decoder_capacity(const vidi_decoder *d) { return d->cap; }

void vidi_decoder_set_swap(vidi_decoder *d, uint64_t host_bytes) { d->swap_budget = host_bytes; }

vidi_decoder_stats vidi_decoder_get_stats(const vidi_decoder *d) {
    vidi_decoder_stats s = d->st;
    s.swapped_now = d->n_out;
    s.swap_bytes = d->swap_used;
    return s;
}

static void s_remove(vidi_decoder *d, int i) {
    vidi_kv_seq_free(d->slots[i].seq);
    d->slots[i] = d->slots[--d->n];
}

static void s_drop_out(vidi_decoder *d, int i) {
    free(d->outs[i].kv);
    d->swap_used -= d->outs[i].bytes;
    d->outs[i] = d->outs[--d->n_out];
}

int vidi_decoder_cancel(vidi_decoder *d, uint64_t tag) {
    for (int i = 0; i < d->n; i++)
        if (d->slots[i].tag == tag) {
            s_remove(d, i);
            return 1;
        }
    for (int i = 0; i < d->n_out; i++)
        if (d->outs[i].slot.tag == tag) {
            s_drop_out(d, i);
            return 1;
        }
    return 0;
}

/* Blocks the running sequences need for their next token. */
static int64_t s_need(const vidi_decoder *d) {
    int64_t need = 0;
    for (int i = 0; i < d->n; i++) {
        int64_t len = vidi_kv_seq_len(d->slots[i].seq);
        need += vidi_kv_pool_blocks_for(d->pool, len + 1) - vidi_kv_pool_blocks_for(d->pool, len);
    }
    return need;
}

/* Running sequence i out to host memory (1), or not (0: no budget, or the
 * export failed; it stays as it was). */
static int s_swap_out(vidi_decoder *d, int i) {
    dec_slot *s = &d->slots[i];
    int64_t len = vidi_kv_seq_len(s->seq);
    size_t bytes = vidi_kv_seq_export_bytes(d->pool, len);
    if (!d->swap_budget || d->swap_used + bytes > d->swap_budget) return 0;
    void *kv = malloc(bytes ? bytes : 1);
    vidi_err err = {0};
    if (!kv || vidi_kv_seq_export(s->seq, 0, len, kv, bytes, &err) != VIDI_OK) {
        free(kv);
        return 0;
    }
    dec_out *o = &d->outs[d->n_out++];
    o->slot = *s;
    o->slot.seq = NULL;
    o->kv = kv;
    o->len = len;
    o->bytes = bytes;
    d->swap_used += bytes;
    d->st.swapped_out++;
    s_remove(d, i); /* frees its blocks */
    return 1;
}

/* The oldest swapped-out sequence back into the batch when its blocks fit
 * next to what the running ones need; 1 when one came back. */
static int s_swap_in(vidi_decoder *d) {
    if (!d->n_out || d->n == d->cap) return 0;
    int o = 0;
    for (int i = 1; i < d->n_out; i++)
        if (d->outs[i].slot.joined < d->outs[o].slot.joined) o = i;
    dec_out *x = &d->outs[o];
    if (s_need(d) + vidi_kv_pool_blocks_for(d->pool, x->len + 1) > vidi_kv_pool_free_blocks(d->pool)) return 0;
    vidi_kv_seq *seq = NULL;
    vidi_err err = {0};
    if (vidi_kv_seq_create(d->pool, &seq, &err) != VIDI_OK ||
        vidi_kv_seq_import(seq, x->kv, x->bytes, x->len, &err) != VIDI_OK) {
        vidi_kv_seq_free(seq);
        return 0;
    }
    dec_slot *s = &d->slots[d->n++];
    *s = x->slot;
    s->seq = seq;
    d->st.swapped_in++;
    s_drop_out(d, o);
    return 1;
}

vidi_status vidi_decoder_step(vidi_decoder *d, vidi_decode_event *ev, int *n_ev, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    vidi_backend *be = d->m->be;
    int64_t V = d->m->cfg.text.vocab_size;
    size_t row = (size_t)V * vidi_dtype_size(be->act_dtype);
    *n_ev = 0;
    /* Swapped-out sequences come back first, oldest first, while they fit. */
    while (s_swap_in(d)) {
    }
    /* Preempt the youngest until every sequence has room for its next
     * token: swapped out to host memory while the budget lasts, else
     * dropped for the caller to recompute. */
    while (d->n > 0 && s_need(d) > vidi_kv_pool_free_blocks(d->pool)) {
        int y = 0;
        for (int i = 1; i < d->n; i++)
            if (d->slots[i].joined > d->slots[y].joined) y = i;
        if (s_swap_out(d, y)) continue;
        ev[*n_ev] = (vidi_decode_event){d->slots[y].tag, -1, d->slots[y].n_out, VIDI_DECODE_PREEMPTED};
        (*n_ev)++;
        d->st.preempted++;
        s_remove(d, y);
    }
    /* Nothing runs and the oldest swapped-out one still does not fit: the
     * blocks are held outside the decoder (or it outgrew the pool). Give it
     * up for recomputation so that the caller can make progress. */
    if (d->n == 0 && d->n_out > 0) {
        int o = 0;
        for (int i = 1; i < d->n_out; i++)
            if (d->outs[i].slot.joined < d->outs[o].slot.joined) o = i;
        ev[*n_ev] = (vidi_decode_event){d->outs[o].slot.tag, -1, d->outs[o].slot.n_out, VIDI_DECODE_PREEMPTED};
        (*n_ev)++;
        d->st.preempted++;
        s_drop_out(d, o);
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
