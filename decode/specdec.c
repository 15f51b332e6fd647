/* decode/specdec.c — prompt lookup and chain verification (specdec.h). */
#include "decode/specdec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

vidi_spec_params vidi_spec_params_default(void) {
    vidi_spec_params p = {VIDI_SPEC_OFF, 4, 1, 3};
    return p;
}

vidi_status vidi_spec_params_check(const vidi_spec_params *p, vidi_err *err) {
    if (p->mode != VIDI_SPEC_OFF && p->mode != VIDI_SPEC_NGRAM && p->mode != VIDI_SPEC_DRAFT)
        return vidi_err_set(err, VIDI_ERR_INVALID, "speculative decoding: unknown mode %d", (int)p->mode);
    if (p->mode == VIDI_SPEC_OFF) return VIDI_OK;
    if (p->k < 1 || p->k > VIDI_SPEC_MAX_K)
        return vidi_err_set(err, VIDI_ERR_INVALID, "speculative decoding: k %d is outside 1..%d", p->k, VIDI_SPEC_MAX_K);
    if (p->mode == VIDI_SPEC_NGRAM && (p->min_n < 1 || p->max_n > 8 || p->min_n > p->max_n))
        return vidi_err_set(err, VIDI_ERR_INVALID, "speculative decoding: n-gram lengths %d..%d (1 <= min <= max <= 8)",
                            p->min_n, p->max_n);
    return VIDI_OK;
}

vidi_status vidi_spec_params_parse(const char *s, vidi_spec_params *p, vidi_err *err) {
    *p = vidi_spec_params_default();
    if (!s || !strcmp(s, "off")) return VIDI_OK;
    int ngram = !strncmp(s, "ngram", 5) && (!s[5] || s[5] == ':');
    int draft = !strncmp(s, "draft", 5) && (!s[5] || s[5] == ':');
    if (!ngram && !draft)
        return vidi_err_set(err, VIDI_ERR_INVALID,
                            "speculative decoding '%s': off, ngram[:K[:MIN_N[:MAX_N]]] or draft[:K]", s);
    p->mode = ngram ? VIDI_SPEC_NGRAM : VIDI_SPEC_DRAFT;
    if (draft) p->k = VIDI_SPEC_DRAFT_K;
    int v[3] = {p->k, p->min_n, p->max_n}, nv = 0;
    const char *c = s + 5;
    while (*c == ':' && nv < (ngram ? 3 : 1)) {
        char *end;
        long x = strtol(c + 1, &end, 10);
        if (end == c + 1 || x < -1000 || x > 1000)
            return vidi_err_set(err, VIDI_ERR_INVALID, "speculative decoding '%s': a number is expected after ':'", s);
        v[nv++] = (int)x;
        c = end;
    }
    if (*c) return vidi_err_set(err, VIDI_ERR_INVALID, "speculative decoding '%s': trailing '%s'", s, c);
    p->k = v[0], p->min_n = v[1], p->max_n = v[2];
    if (nv == 2 && p->max_n < p->min_n) p->max_n = p->min_n;
    return vidi_spec_params_check(p, err);
}

int vidi_spec_ngram_propose(const int32_t *ctx, int64_t n, int min_n, int max_n, int k, int32_t *out) {
    if (k < 1 || min_n < 1 || max_n < min_n) return 0;
    for (int g = max_n; g >= min_n; g--) {
        if (n < g + 1) continue;
        const int32_t *tail = ctx + n - g;
        /* the latest earlier occurrence: start s with s + g <= n - 1 (something follows it) */
        for (int64_t s = n - g - 1; s >= 0; s--) {
            if (memcmp(ctx + s, tail, (size_t)g * sizeof *ctx)) continue;
            int m = 0;
            for (int64_t j = s + g; j < n && m < k; j++) out[m++] = ctx[j];
            return m;
        }
    }
    return 0;
}

static int cmp_cand(const void *a, const void *b) { /* logit descending, then id ascending */
    const vidi_spec_cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

vidi_status vidi_spec_draft_check(const vidi_model_config *t, const vidi_model_config *d, vidi_err *err) {
    int same_eos = t->n_eos == d->n_eos;
    for (int i = 0; same_eos && i < t->n_eos; i++) same_eos = t->eos_token_ids[i] == d->eos_token_ids[i];
    if (d->text.vocab_size > t->text.vocab_size || !same_eos || d->image_token_id != t->image_token_id ||
        d->video_token_id != t->video_token_id || d->vision_start_token_id != t->vision_start_token_id)
        return vidi_err_set(err, VIDI_ERR_INVALID, "speculative decoding: the draft's vocabulary (%lld tokens, its "
                            "special ids) is not the target's (%lld) or a prefix of it",
                            (long long)d->text.vocab_size, (long long)t->text.vocab_size);
    return VIDI_OK;
}

int vidi_spec_greedy(const vidi_sample_params *sp) { return !(sp->temperature > 0.0f) || sp->top_k == 1; }

static int32_t s_argmax(const float *l, int64_t V) {
    int64_t best = -1;
    for (int64_t i = 0; i < V; i++)
        if (!isnan(l[i]) && (best < 0 || l[i] > l[best])) best = i;
    return (int32_t)(best < 0 ? 0 : best);
}

void vidi_spec_warp(const float *logits, int64_t V, const vidi_sample_params *sp, double *prob,
                    vidi_spec_cand *c) {
    memset(prob, 0, (size_t)V * sizeof *prob);
    int64_t m = 0;
    for (int64_t i = 0; i < V; i++)
        if (!isnan(logits[i]) && logits[i] != -INFINITY) c[m++] = (vidi_spec_cand){logits[i], (int32_t)i};
    if (m == 0 || vidi_spec_greedy(sp)) {
        prob[s_argmax(logits, V)] = 1.0;
        return;
    }
    qsort(c, (size_t)m, sizeof *c, cmp_cand);
    if (sp->top_k > 0 && sp->top_k < m) m = sp->top_k;
    const double inv_t = 1.0 / (double)sp->temperature, top = c[0].logit;
    double total = 0;
    for (int64_t i = 0; i < m; i++) {
        double z = c[i].logit == top ? 0.0 : ((double)c[i].logit - top) * inv_t;
        prob[c[i].id] = exp(z);
        total += prob[c[i].id];
    }
    int64_t keep = m;
    if (sp->top_p < 1.0f) {
        const double need = (double)sp->top_p * total;
        double cum = 0;
        for (keep = 0; keep < m;) {
            cum += prob[c[keep++].id];
            if (cum >= need) break;
        }
        for (int64_t i = keep; i < m; i++) prob[c[i].id] = 0;
        total = cum;
    }
    for (int64_t i = 0; i < keep; i++) prob[c[i].id] /= total;
}

/* One draw from prob (V entries summing to about `total`). */
static int32_t s_draw(const double *prob, int64_t V, double total, uint64_t *rng) {
    const double target = (double)vidi_rng_uniform(rng) * total;
    double cum = 0;
    int64_t last = -1;
    for (int64_t i = 0; i < V; i++) {
        if (prob[i] <= 0) continue;
        cum += prob[i];
        last = i;
        if (target < cum) return (int32_t)i;
    }
    return (int32_t)(last < 0 ? 0 : last);
}

int vidi_spec_verify(const float *logits, int64_t V, const int32_t *draft, const double *q, int k,
                     const vidi_sample_params *sp, uint64_t *rng, double *prob, vidi_spec_cand *scratch,
                     int32_t *emit) {
    const int greedy = vidi_spec_greedy(sp);
    for (int i = 0; i < k; i++) {
        const float *row = logits + (size_t)i * (size_t)V;
        const int32_t d = draft[i];
        if (greedy) {
            int32_t t = s_argmax(row, V);
            emit[i] = t;
            if (t != d) return i + 1;
            continue;
        }
        vidi_spec_warp(row, V, sp, prob, scratch);
        const double *qi = q ? q + (size_t)i * (size_t)V : NULL;
        double pd = d >= 0 && d < V ? prob[d] : 0.0, qd = qi ? (d >= 0 && d < V ? qi[d] : 0.0) : 1.0;
        if (qd > 0 && (double)vidi_rng_uniform(rng) * qd < pd) {
            emit[i] = d;
            continue;
        }
        /* rejected: the residual max(0, p - q) (of a point mass: p without d) */
        double total = 0;
        for (int64_t x = 0; x < V; x++) {
            double r = prob[x] - (qi ? qi[x] : (x == d ? 1.0 : 0.0));
            prob[x] = r > 0 ? r : 0;
            total += prob[x];
        }
        if (total <= 0) { /* p == q within rounding: p itself */
            vidi_spec_warp(row, V, sp, prob, scratch);
            total = 1.0;
        }
        emit[i] = s_draw(prob, V, total, rng);
        return i + 1;
    }
    const float *row = logits + (size_t)k * (size_t)V;
    if (greedy) {
        emit[k] = s_argmax(row, V);
    } else {
        vidi_spec_warp(row, V, sp, prob, scratch);
        emit[k] = s_draw(prob, V, 1.0, rng);
    }
    return k + 1;
}

int vidi_spec_verify_tokens(const int32_t *argmax, const int32_t *draft, int k, int32_t *emit) {
    int i = 0;
    while (i < k && draft[i] == argmax[i]) emit[i] = draft[i], i++;
    emit[i] = argmax[i];
    return i + 1;
}

int32_t vidi_spec_draft_token(const float *logits, int64_t V, const vidi_sample_params *sp, uint64_t *rng, double *q,
                              vidi_spec_cand *scratch) {
    vidi_spec_warp(logits, V, sp, q, scratch);
    if (vidi_spec_greedy(sp)) return s_argmax(logits, V);
    return s_draw(q, V, 1.0, rng);
}
