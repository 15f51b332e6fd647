/* decode/specdec.h — speculative decoding's pieces without a model:
 * prompt-lookup proposals (n-grams of the context) and lossless chain
 * verification of point-mass drafts (../shared/reference/specdec.md §2).
 *
 * A step of a speculative sequence: the proposer drafts d1..dk from the
 * sequence's tokens; the target runs once over [u, d1..dk] (u: the last
 * sampled token, not yet in the KV) and gives k + 1 rows of logits, row i
 * predicting the token after input i; vidi_spec_verify emits the accepted
 * drafts and one token of the target's (a correction, or the bonus after
 * k accepted), and the caller truncates the KV to the accepted prefix.
 * Greedy requests (temperature <= 0 or top_k 1) emit exactly what plain
 * greedy decoding emits; sampled ones keep the target's distribution
 * (accept d with probability p(d), else draw from p with d removed). */
#ifndef VIDI_DECODE_SPECDEC_H
#define VIDI_DECODE_SPECDEC_H

#include <stdint.h>

#include "core/err.h"
#include "kernels/ops.h"
#include "model/config.h"

#define VIDI_SPEC_MAX_K 16
/* "draft" without K: the k that served vidi-shapes-draft1 best on the H100
 * (bench/results/specdec-k-sweep.json: 5 and 6 alike, 4 and 8 below) */
#define VIDI_SPEC_DRAFT_K 5

typedef enum vidi_spec_mode { VIDI_SPEC_OFF = 0, VIDI_SPEC_NGRAM = 1, VIDI_SPEC_DRAFT = 2 } vidi_spec_mode;

typedef struct vidi_spec_params {
    vidi_spec_mode mode;
    int k;                   /* proposals per step, 1..VIDI_SPEC_MAX_K */
    int min_n, max_n;        /* n-gram lengths matched, 1 <= min_n <= max_n <= 8 */
} vidi_spec_params;

vidi_spec_params vidi_spec_params_default(void); /* off; k 4, n 1..3 when on */
/* Checks the settings (k and n ranges) with a message naming what is wrong. */
vidi_status vidi_spec_params_check(const vidi_spec_params *p, vidi_err *err);
/* "off", "ngram[:K[:MIN_N[:MAX_N]]]" or "draft[:K]" (a draft model; its model is
 * given to the decoder by vidi_decoder_set_draft; K VIDI_SPEC_DRAFT_K unless
 * given) into *p. */
vidi_status vidi_spec_params_parse(const char *s, vidi_spec_params *p, vidi_err *err);

/* Prompt lookup: the longest n-gram (max_n down to min_n) ending ctx[n-1]
 * that also occurs earlier in ctx; the up to k tokens that followed its
 * latest earlier occurrence go to out. Returns how many (0: no match). */
int vidi_spec_ngram_propose(const int32_t *ctx, int64_t n, int min_n, int max_n, int k, int32_t *out);

/* The target's distribution after the request's warping, as the sampler
 * draws from it (kernels/cpu sample_row): logits / temperature, the top_k,
 * the smallest prefix of the sorted probabilities reaching top_p,
 * renormalised. prob gets V entries; scratch holds V (logit, id) pairs. */
typedef struct vidi_spec_cand {
    float logit;
    int32_t id;
} vidi_spec_cand;
void vidi_spec_warp(const float *logits, int64_t V, const vidi_sample_params *sp, double *prob,
                    vidi_spec_cand *scratch);

/* Chain verification of k drafts against k + 1 rows of target logits (host
 * f32, row-major [k + 1, V]). q: the draft's distributions the drafts were
 * drawn from ([k, V], row i for draft i, warped like the target's), or NULL
 * for point masses (prompt lookup, greedy drafts). Writes the emitted
 * tokens to emit (room for k + 1) and returns their count a + 1: a accepted
 * drafts and one target token. Greedy: argmax (lowest index on ties).
 * Sampling: accept d with probability min(1, p(d) / q(d)), else draw from
 * max(0, p - q) renormalised; draws from rng (vidi_rng_uniform). prob and
 * scratch hold V entries. */
int vidi_spec_verify(const float *logits, int64_t V, const int32_t *draft, const double *q, int k,
                     const vidi_sample_params *sp, uint64_t *rng, double *prob, vidi_spec_cand *scratch,
                     int32_t *emit);

/* May `draft` draft for `target`: its vocabulary the target's or a prefix
 * of it (the target's padding rows never drafted), the same end-of-sequence
 * ids and image, video and vision-start ids? VIDI_ERR_INVALID with a
 * message naming the vocabularies otherwise. */
vidi_status vidi_spec_draft_check(const vidi_model_config *target, const vidi_model_config *draft, vidi_err *err);

/* Is sampling with sp greedy (temperature <= 0 or top_k 1)? The rule of
 * vidi_spec_verify and of the backends' sample op. */
int vidi_spec_greedy(const vidi_sample_params *sp);
/* Greedy chain verification from the target's argmax tokens already taken
 * (argmax[i]: row i's, k + 1 of them): the same rule as vidi_spec_verify's
 * greedy one. Writes the emitted tokens and returns their count. */
int vidi_spec_verify_tokens(const int32_t *argmax, const int32_t *draft, int k, int32_t *emit);

/* A draft token from draft logits (host f32, V of them): greedy, the
 * argmax; sampling, a draw from the warped distribution, written to q (V
 * entries; q[i] = 1 at the argmax when greedy). */
int32_t vidi_spec_draft_token(const float *logits, int64_t V, const vidi_sample_params *sp, uint64_t *rng, double *q,
                              vidi_spec_cand *scratch);

#endif
