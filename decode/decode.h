/* decode/decode.h — the decode role, without sockets: continuous batching
 * of many sequences over one paged KV pool.
 *
 * A sequence joins after prefill (here or in another process: its KV is
 * then imported into a sequence of this pool first) with the token that
 * prefill sampled, which is not yet in its KV. Every vidi_decoder_step runs
 * one batched forward over all running sequences (vidi_text_decode_batch),
 * samples each one's next token with its own parameters and RNG, and
 * reports the tokens; a sequence that ends (end-of-sequence id, a stop id,
 * max_tokens) leaves the batch and its blocks go back to the pool. Given the
 * same prefill, seed and parameters, a sequence produces the tokens
 * vidi_generate produces.
 *
 * When the pool runs out of blocks, the youngest sequence is preempted. With
 * a swap budget (vidi_decoder_set_swap) its KV is copied to host memory and
 * its blocks freed; it comes back, oldest first, as soon as its blocks fit
 * again, and goes on with exactly the tokens it would have produced. Past
 * the budget (or with none) it leaves the batch with VIDI_DECODE_PREEMPTED
 * and the caller recomputes it (a new prefill). Single-threaded.
 *
 * Speculative decoding (vidi_decoder_set_spec, decode/specdec.h): each step
 * first drafts up to k tokens per sequence by prompt lookup over its
 * context (vidi_decoder_add_context: the prompt's ids) and its output. A
 * sequence with a draft runs one target forward over its pending token and
 * the draft (vidi_text_forward_paged), emits the accepted drafts and one
 * target token, and its KV is truncated to what was accepted (no copies);
 * sequences without a draft step together as before. Greedy sequences emit
 * exactly the tokens of plain decoding; sampled ones keep the target's
 * distribution (a different random stream). Each sequence's k starts at 1
 * and adapts to what it gets accepted: one more after a fully accepted draft
 * (up to the configured k), one fewer when less than half was (down to 1).
 */
#ifndef VIDI_DECODE_DECODE_H
#define VIDI_DECODE_DECODE_H

#include <stdint.h>

#include "core/err.h"
#include "kernels/ops.h"
#include "decode/specdec.h"
#include "model/model.h"
#include "model/text.h"

#define VIDI_DECODE_MAX_STOP_IDS 16

typedef struct vidi_decode_params {
    vidi_sample_params sample;
    int max_tokens;          /* tokens in all, the prefill's first one included */
    int stop_at_eos;         /* the configuration's end-of-sequence ids end it */
    int n_stop_ids;
    int32_t stop_ids[VIDI_DECODE_MAX_STOP_IDS];
} vidi_decode_params;

typedef enum vidi_decode_state {
    VIDI_DECODE_RUNNING = 0,
    VIDI_DECODE_STOP = 1,      /* an end-of-sequence or stop id (it is the last token) */
    VIDI_DECODE_LENGTH = 2,    /* max_tokens reached */
    VIDI_DECODE_PREEMPTED = 3, /* the pool ran out of blocks: recompute it */
} vidi_decode_state;

typedef struct vidi_decode_event {
    uint64_t tag;            /* the caller's name for the sequence */
    int32_t token;           /* the new token (not for PREEMPTED) */
    int index;               /* its position in the output (0 is prefill's token) */
    vidi_decode_state state; /* RUNNING, or why the sequence left the batch */
} vidi_decode_event;

typedef struct vidi_decoder vidi_decoder;

/* Speculative decoding settings for the sequences added from now on (and
 * the running ones): VIDI_SPEC_OFF (the default) or VIDI_SPEC_NGRAM.
 * Refused with a message when out of range. */
vidi_status vidi_decoder_set_spec(vidi_decoder *d, const vidi_spec_params *p, vidi_err *err);
/* Speculation with a draft model (mode VIDI_SPEC_DRAFT): a smaller model
 * of the same tokenizer (its vocabulary the target's or a prefix of it: the
 * target's padding rows are never drafted; the same end-of-sequence ids),
 * over its own pool (neither owned). k drafts per step, each drawn from the
 * draft's distribution under the sequence's sampling settings; the target
 * verifies them with that distribution. A sequence drafts once it has a
 * draft sequence (vidi_decoder_add_draft); the others decode plainly. */
vidi_status vidi_decoder_set_draft(vidi_decoder *d, vidi_model *draft, vidi_kv_pool *draft_pool, int k,
                                   vidi_err *err);
/* The draft model's sequence for `tag`: its prompt prefilled by the draft
 * (its own vision embeddings), the prefill's rope_delta; ownership passes
 * (on failure too). The target's pending token is not in it. */
vidi_status vidi_decoder_add_draft(vidi_decoder *d, uint64_t tag, vidi_kv_seq *seq, int64_t rope_delta,
                                   vidi_err *err);
/* The same for a draft sequence one token behind the target's KV: `lag`
 * (>= 0) is the token it has not seen before the pending one (a sequence
 * handed on after a fully accepted draft: vidi_decoder_taken's dlag); -1 is
 * vidi_decoder_add_draft. */
vidi_status vidi_decoder_add_draft_lag(vidi_decoder *d, uint64_t tag, vidi_kv_seq *seq, int64_t rope_delta, int32_t lag,
                                       vidi_err *err);
/* Speculate only while at most n sequences run (0: always, the default).
 * A step above it decodes plainly, and the draft model's sequences are
 * dropped (they would miss the step's tokens): speculation pays while a
 * step is cheap next to its rows (bench/results/specdec-*.json). */
void vidi_decoder_set_spec_batch(vidi_decoder *d, int n);
/* The prompt's ids of the sequence `tag`, for prompt lookup (copied). */
vidi_status vidi_decoder_add_context(vidi_decoder *d, uint64_t tag, const int32_t *ids, int64_t n, vidi_err *err);
/* Events one vidi_decoder_step may write (running x (k + 1) with
 * speculation, running without). */
int vidi_decoder_max_events(const vidi_decoder *d);

/* A decoder over `pool` (not owned; the model and pool outlive it),
 * batching up to max_batch sequences (<= the pool's max_batch). */
vidi_status vidi_decoder_create(vidi_model *m, vidi_kv_pool *pool, int max_batch, vidi_decoder **out, vidi_err *err);
/* Frees the decoder and every sequence still in it. */
void vidi_decoder_free(vidi_decoder *d);

/* Add a prefilled sequence (ownership of seq passes to the decoder, on
 * failure too). last_token: the token sampled after the sequence's KV (not in
 * it yet); n_out: tokens generated so far, last_token included; rng: the
 * RNG state after sampling it. A sequence that is already done (last_token
 * stops it, or n_out >= max_tokens) is refused with VIDI_ERR_INVALID: the
 * caller finishes it without the decoder. VIDI_ERR_RANGE when the batch is
 * full. */
vidi_status vidi_decoder_add(vidi_decoder *d, uint64_t tag, vidi_kv_seq *seq, int32_t last_token, int n_out,
                             int64_t rope_delta, uint64_t rng, const vidi_decode_params *p, vidi_err *err);

/* Does params end the output after `token`, the n_out-th token? (STOP,
 * LENGTH or RUNNING; what the decoder applies after every token, for a
 * caller deciding about prefill's token.) */
vidi_decode_state vidi_decode_check(const vidi_model_config *cfg, const vidi_decode_params *p, int32_t token,
                                    int n_out);

/* Sequences in the decoder: running, or swapped out (they keep their place
 * in the batch). */
int vidi_decoder_running(const vidi_decoder *d);
int vidi_decoder_capacity(const vidi_decoder *d);

/* Host bytes for swapped-out KV (0, the default: preempted sequences are
 * given back for recomputation). */
void vidi_decoder_set_swap(vidi_decoder *d, uint64_t host_bytes);

typedef struct vidi_decoder_stats {
    uint64_t spec_steps;              /* target forwards over a draft */
    uint64_t spec_proposed;           /* draft tokens proposed */
    uint64_t spec_accepted;           /* draft tokens accepted */
    uint64_t spec_emitted;            /* tokens those forwards delivered (accepted + one each, none past a stop) */
    uint64_t spec_accepted_at[VIDI_SPEC_MAX_K]; /* drafts accepted at position i (0-based) */
    uint64_t spec_proposed_at[VIDI_SPEC_MAX_K]; /* drafts proposed at position i */
    uint64_t draft_ns;                /* wall time in the draft model's steps: they end waiting for it, except
                                         all-greedy chains (queued only; their tokens go on to the target's step) */
    uint64_t swapped_out, swapped_in; /* since creation */
    uint64_t preempted;               /* PREEMPTED events (recompute) */
    int swapped_now;                  /* out right now */
    uint64_t swap_bytes;              /* host bytes they hold */
} vidi_decoder_stats;
vidi_decoder_stats vidi_decoder_get_stats(const vidi_decoder *d);

/* One step of every running sequence. ev must hold
 * vidi_decoder_max_events(d) events; *n_ev receives how many were written
 * (one per token a sequence produced, one per sequence preempted; none for
 * a swap). */
vidi_status vidi_decoder_step(vidi_decoder *d, vidi_decode_event *ev, int *n_ev, vidi_err *err);

/* Remove a sequence (cancelled, or its client went away): 1 if it was
 * there. */
int vidi_decoder_cancel(vidi_decoder *d, uint64_t tag);

/* A running sequence taken out to go on elsewhere (a decode worker's role
 * switch hands its sequences to another: PROTOCOL.md §5.6): its KV, the
 * token it has not fed yet (the last emitted), the tokens emitted so far,
 * its rope_delta and sampler state, and its draft model's sequence when
 * that has seen every token the target's KV has, or all but dlag (>= 0,
 * the token before the pending one; else -1); otherwise dseq is NULL
 * (freed). The caller owns seq and dseq. */
typedef struct vidi_decoder_taken {
    vidi_kv_seq *seq, *dseq;
    int32_t pending, dlag;
    int n_out;
    int64_t rope_delta, drope;
    uint64_t rng;
} vidi_decoder_taken;
/* 1 and *out when tag runs in the pool; 0 when it is not here or swapped
 * out to host memory (it stays). */
int vidi_decoder_take(vidi_decoder *d, uint64_t tag, vidi_decoder_taken *out);

#endif
