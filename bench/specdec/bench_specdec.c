/* bench/specdec/bench_specdec.c — speculative decoding against plain
 * decoding in the same run (bench/specdec/run.sh; results in
 * bench/results/specdec-*.json).
 *
 *   bench_specdec [--exact] --model DIR --examples DIR [--questions TSV] [--draft DIR[,DIR...]]
 *                 [--backend cuda|cpu] [--batch 1,8,32] [--tokens 64] [--k 4] [--threads N]
 *                 [--workload caption|qa|both] [--repeat N]
 *
 * Two workloads on the media files of DIR: captioning ("Describe the
 * video." / "Describe the image." for each file) and QA (the TSV's file and
 * question columns; default DIR/questions.tsv).
 * For each batch size B the prompts are taken round-robin into a set of
 * sequences (every prompt at least once, a multiple of B), decoded in
 * rounds of B: a round's sequences are prefilled (not timed) into one paged
 * pool, with the draft model's own vision embeddings and prefill when it is
 * used, and then decoded together by one vidi_decoder to the end (greedy, at
 * most --tokens tokens each, timed): plain, prompt lookup (ngram, k) and
 * each draft model of --draft in turn (k). The whole set runs once untimed
 * first (CUDA graphs recorded, caches warm), then --repeat times timed (the
 * median reported). Prints one JSON line per
 * (workload, batch, mode, draft):
 * the generated tokens after the first, the decode seconds (the backend
 * synchronised at the end of each round), tokens/s, the drafts proposed and
 * accepted (in all and at each draft position), the target steps over drafts and whether every sequence's
 * tokens equal the plain run's (greedy speculation is exact; on CUDA bit for
 * bit with --exact, the backend's batch-invariant kernels).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "decode/decode.h"
#include "kernels/ops.h"
#include "media/media.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "model/vision.h"
#include "prefill/prefill.h"

#define MAX_PROMPTS 512
#define MAX_B 64
#define MAX_SEQS 1024
#define MAX_REPEAT 15

typedef struct prompt {
    char file[1024], question[1024];
} prompt;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_list(const char *s, int *out, int cap) {
    int n = 0;
    while (*s && n < cap) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

/* The prompts of a workload: captions of every example file, or QA. */
static int load_prompts(const char *path, int qa, prompt *p) {
    int n = 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[1024], last[1024] = "";
    while (fgets(line, sizeof line, f) && n < MAX_PROMPTS) {
        if (line[0] == '#' || line[0] == '\n') continue;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = 0;
        char *q = tab + 1, *t2 = strchr(q, '\t');
        if (t2) *t2 = 0;
        q[strcspn(q, "\r\n")] = 0;
        if (qa) {
            snprintf(p[n].file, sizeof p[n].file, "%s", line);
            snprintf(p[n].question, sizeof p[n].question, "%s", q);
            n++;
        } else if (strcmp(line, last)) {
            snprintf(last, sizeof last, "%s", line);
            snprintf(p[n].file, sizeof p[n].file, "%s", line);
            snprintf(p[n].question, sizeof p[n].question, "%s",
                     strncmp(line, "video_", 6) ? "Describe the image." : "Describe the video.");
            n++;
        }
    }
    fclose(f);
    return n;
}

/* One prompt prefilled by model m (its own vision embeddings) into a new
 * sequence of pool. */
static vidi_status prefill_one(vidi_model *m, vidi_tokenizer *tok, const vidi_preproc_config *pp, const char *examples,
                               const prompt *p, vidi_kv_pool *pool, vidi_kv_seq **seq, vidi_prefill_result *pr,
                               int32_t **ids_out, int64_t *n_ids_out, vidi_err *err) {
    vidi_backend *be = m->be;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", examples, p->file);
    uint8_t *data = NULL;
    size_t size = 0;
    vidi_media_item item = {0};
    vidi_media_options opt = vidi_media_options_default();
    vidi_media_limits lim = vidi_media_limits_default();
    int video = !strncmp(p->file, "video_", 6);
    vidi_status rc = vidi_media_read_file(path, NULL, 0, lim.max_bytes, &data, &size, err);
    if (rc == VIDI_OK)
        rc = video ? vidi_media_video_to_item(data, size, pp, &opt, &lim, &item, err)
                   : vidi_media_image_to_item(data, size, pp, &opt, &lim, &item, err);
    free(data);
    if (rc) return rc;
    vidi_media md = {.kind = video ? VIDI_MEDIA_VIDEO : VIDI_MEDIA_IMAGE, .pixels = item.pixels, .n_rows = item.rows,
                     .second_per_grid_t = (float)item.second_per_grid_t};
    memcpy(md.grid, item.grid, sizeof md.grid);
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    void *vis = NULL;
    rc = vidi_prompt_build(&m->cfg, tok, NULL, p->question, &md, 1, &ids, &n_ids, err);
    vidi_prefill_item pi = {.kind = md.kind, .second_per_grid_t = md.second_per_grid_t};
    memcpy(pi.grid, md.grid, sizeof pi.grid);
    int64_t rows = vidi_prefill_item_rows(&m->cfg, &pi), H = m->cfg.text.hidden_size;
    if (rc == VIDI_OK) {
        vis = be->ops->buf_alloc(be, (size_t)(rows * H) * vidi_dtype_size(be->act_dtype));
        if (!vis) rc = vidi_err_set(err, VIDI_ERR_NOMEM, "vision rows");
    }
    vidi_tensor vt = vidi_tensor_2d(be->act_dtype, vis, rows, H);
    if (rc == VIDI_OK) rc = vidi_vision_encode(m->vision, md.pixels, md.n_rows, (const int32_t(*)[3])md.grid, 1, &vt, err);
    if (rc == VIDI_OK) rc = vidi_kv_seq_create(pool, seq, err);
    uint64_t rng = vidi_rng_seed(1);
    vidi_sample_params sp = {.temperature = 0.0f, .top_k = 1, .top_p = 1.0f};
    if (rc == VIDI_OK) rc = vidi_prefill_run(m, *seq, ids, n_ids, &pi, 1, &vt, &sp, &rng, pr, err);
    if (rc == VIDI_OK) rc = be->ops->synchronize(be, err);
    if (vis) be->ops->buf_free(be, vis);
    if (ids_out && rc == VIDI_OK) {
        *ids_out = ids, *n_ids_out = n_ids; /* the caller's now */
        ids = NULL;
    }
    free(ids);
    vidi_media_item_free(&item);
    return rc;
}

typedef struct run_out {
    int32_t *tok[MAX_SEQS];
    int n[MAX_SEQS];
    int n_seqs;
    double seconds;
    int64_t generated;
    vidi_decoder_stats st;
} run_out;

/* Sequences s0 .. s0 + B - 1 of the workload (prompts round-robin)
 * prefilled (not timed) and decoded together to the end (timed). */
static vidi_status run_round(vidi_model *m, vidi_model *dm, vidi_tokenizer *tok, const vidi_preproc_config *pp,
                             const vidi_preproc_config *dpp, const char *examples, const prompt *ps, int n_ps,
                             int s0, int B, int mode, int max_tokens, vidi_kv_pool *pool, vidi_kv_pool *dpool,
                             vidi_decoder *dec, vidi_decode_event *ev, run_out *o, vidi_err *err) {
    vidi_status rc = VIDI_OK;
    for (int b = s0; b < s0 + B && rc == VIDI_OK; b++) {
        const prompt *p = &ps[b % n_ps];
        vidi_kv_seq *seq = NULL;
        vidi_prefill_result pr;
        int32_t *ids = NULL;
        int64_t n_ids = 0;
        rc = prefill_one(m, tok, pp, examples, p, pool, &seq, &pr, &ids, &n_ids, err);
        if (rc) break;
        o->n[b] = 0;
        o->tok[b][o->n[b]++] = pr.first_token;
        vidi_decode_params dp = {.sample = {0.0f, 1, 1.0f}, .max_tokens = max_tokens, .stop_at_eos = 1};
        if (vidi_decode_check(&m->cfg, &dp, pr.first_token, 1) != VIDI_DECODE_RUNNING) {
            vidi_kv_seq_free(seq);
            free(ids);
            continue;
        }
        rc = vidi_decoder_add(dec, (uint64_t)b, seq, pr.first_token, 1, pr.rope_delta, vidi_rng_seed(1), &dp, err);
        /* prompt lookup's context: the prompt, as a worker that prefilled it gives it */
        if (rc == VIDI_OK && mode == 1) rc = vidi_decoder_add_context(dec, (uint64_t)b, ids, n_ids, err);
        free(ids);
        if (rc == VIDI_OK && mode == 2) {
            vidi_kv_seq *dseq = NULL;
            vidi_prefill_result dpr;
            rc = prefill_one(dm, tok, dpp, examples, p, dpool, &dseq, &dpr, NULL, NULL, err);
            if (rc == VIDI_OK) rc = vidi_decoder_add_draft(dec, (uint64_t)b, dseq, dpr.rope_delta, err);
        }
    }
    double t0 = now_s();
    while (rc == VIDI_OK && vidi_decoder_running(dec) > 0) {
        int n_ev = 0;
        rc = vidi_decoder_step(dec, ev, &n_ev, err);
        for (int e = 0; e < n_ev && rc == VIDI_OK; e++) {
            int b = (int)ev[e].tag;
            if (ev[e].state == VIDI_DECODE_PREEMPTED) rc = vidi_err_set(err, VIDI_ERR_RANGE, "preempted");
            else if (o->n[b] < max_tokens) o->tok[b][o->n[b]++] = ev[e].token, o->generated++;
        }
    }
    if (rc == VIDI_OK) rc = m->be->ops->synchronize(m->be, err);
    o->seconds += now_s() - t0;
    return rc;
}

/* The workload in one mode (0 plain, 1 ngram, 2 draft) at batch B: its
 * sequences (every prompt at least once, a multiple of B) in rounds of B
 * decoded together; the whole set once untimed first (CUDA graphs of every
 * row count recorded, caches warm), then timed `repeat` times: the median
 * time, the last timed pass's tokens and counters (greedy decoding repeats
 * itself). */
static vidi_status run_mode(vidi_model *m, vidi_model *dm, vidi_tokenizer *tok, const vidi_preproc_config *pp,
                            const vidi_preproc_config *dpp, const char *examples, const prompt *ps, int n_ps, int B,
                            int mode, int k, int max_tokens, int repeat, run_out *o, vidi_err *err) {
    memset(o, 0, sizeof *o);
    int N = ((n_ps > B ? n_ps : B) + B - 1) / B * B;
    if (N > MAX_SEQS) N = MAX_SEQS / B * B;
    o->n_seqs = N;
    /* a step's rows: B sequences, each its pending token and up to k drafts */
    vidi_kv_pool_params kp = {.block_size = 16, .n_blocks = (int64_t)B * 160 + 64, .max_seq_len = 2048,
                              .max_batch = B * (mode ? k + 1 : 1)};
    vidi_kv_pool_params dkp = kp;
    dkp.max_batch = 2 * B;
    vidi_kv_pool *pool = NULL, *dpool = NULL;
    vidi_decoder *dec = NULL;
    vidi_decode_event *ev = NULL;
    vidi_status rc = vidi_kv_pool_create(m->text, &kp, &pool, err);
    if (rc == VIDI_OK && mode == 2) rc = vidi_kv_pool_create(dm->text, &dkp, &dpool, err);
    if (rc == VIDI_OK) rc = vidi_decoder_create(m, pool, B, &dec, err);
    if (rc == VIDI_OK && mode == 1) {
        vidi_spec_params sp = {VIDI_SPEC_NGRAM, k, 1, 3};
        rc = vidi_decoder_set_spec(dec, &sp, err);
    }
    if (rc == VIDI_OK && mode == 2) rc = vidi_decoder_set_draft(dec, dm, dpool, k, err);
    for (int b = 0; b < N && rc == VIDI_OK; b++)
        if (!(o->tok[b] = calloc((size_t)max_tokens, sizeof(int32_t)))) rc = vidi_err_set(err, VIDI_ERR_NOMEM, "tokens");
    if (rc == VIDI_OK) {
        ev = malloc((size_t)B * (VIDI_SPEC_MAX_K + 1) * sizeof *ev);
        if (!ev) rc = vidi_err_set(err, VIDI_ERR_NOMEM, "events");
    }
    double secs[MAX_REPEAT + 1];
    for (int pass = 0; pass <= repeat && rc == VIDI_OK; pass++) {
        o->seconds = 0;
        o->generated = 0;
        vidi_decoder_stats st0 = vidi_decoder_get_stats(dec);
        for (int s0 = 0; s0 < N && rc == VIDI_OK; s0 += B)
            rc = run_round(m, dm, tok, pp, dpp, examples, ps, n_ps, s0, B, mode, max_tokens, pool, dpool, dec, ev, o,
                           err);
        /* the timed pass's counters only */
        vidi_decoder_stats st = vidi_decoder_get_stats(dec);
        o->st = st;
        o->st.spec_steps -= st0.spec_steps, o->st.spec_proposed -= st0.spec_proposed;
        o->st.spec_accepted -= st0.spec_accepted, o->st.spec_emitted -= st0.spec_emitted;
        o->st.draft_ns -= st0.draft_ns;
        for (int j = 0; j < VIDI_SPEC_MAX_K; j++)
            o->st.spec_proposed_at[j] -= st0.spec_proposed_at[j], o->st.spec_accepted_at[j] -= st0.spec_accepted_at[j];
        secs[pass] = o->seconds;
    }
    if (rc == VIDI_OK) { /* the median of the timed passes (1 .. repeat) */
        for (int a = 2; a <= repeat; a++)
            for (int b = a; b > 1 && secs[b] < secs[b - 1]; b--) {
                double x = secs[b];
                secs[b] = secs[b - 1], secs[b - 1] = x;
            }
        o->seconds = repeat % 2 ? secs[1 + repeat / 2] : 0.5 * (secs[repeat / 2] + secs[repeat / 2 + 1]);
    }
    free(ev);
    vidi_decoder_free(dec);
    vidi_kv_pool_free(dpool);
    vidi_kv_pool_free(pool);
    return rc;
}

int main(int argc, char **argv) {
    const char *model = NULL, *examples = NULL, *draft = NULL, *backend = "cuda", *batches = "1,8,32", *qpath = NULL;
    int max_tokens = 64, k = 4, threads = 0, exact = 0, qa0 = 0, qa1 = 1, repeat = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--exact")) {
            exact = 1;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "bench_specdec: %s needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "--model")) model = v;
        else if (!strcmp(argv[i], "--examples")) examples = v;
        else if (!strcmp(argv[i], "--questions")) qpath = v;
        else if (!strcmp(argv[i], "--draft")) draft = v;
        else if (!strcmp(argv[i], "--backend")) backend = v;
        else if (!strcmp(argv[i], "--batch")) batches = v;
        else if (!strcmp(argv[i], "--tokens")) max_tokens = atoi(v);
        else if (!strcmp(argv[i], "--k")) k = atoi(v);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(v);
        else if (!strcmp(argv[i], "--repeat")) repeat = atoi(v);
        else if (!strcmp(argv[i], "--workload") && !strcmp(v, "caption")) qa0 = qa1 = 0;
        else if (!strcmp(argv[i], "--workload") && !strcmp(v, "qa")) qa0 = qa1 = 1;
        else if (!strcmp(argv[i], "--workload") && !strcmp(v, "both")) qa0 = 0, qa1 = 1;
        else {
            fprintf(stderr, "bench_specdec: unknown option %s\n", argv[i]);
            return 2;
        }
        i++;
    }
    int bs[8], nb = parse_list(batches, bs, 8);
    if (!model || !examples || nb < 1 || max_tokens < 2 || k < 1 || k > VIDI_SPEC_MAX_K ||
        repeat < 1 || repeat > MAX_REPEAT) {
        fprintf(stderr, "usage: bench_specdec [--exact] --model DIR --examples DIR [--draft DIR] [--backend cuda|cpu] "
                        "[--batch 1,8,32] [--tokens 64] [--k 4] [--threads N] [--workload caption|qa|both] [--repeat N]\n");
        return 2;
    }
    vidi_err err = {0};
    vidi_backend *be = NULL;
    if (!strcmp(backend, "cpu")) be = vidi_backend_cpu_create(threads, &err);
#ifdef VIDI_HAVE_CUDA
    else be = vidi_backend_cuda_create(0, &err);
#endif
    if (!be) {
        fprintf(stderr, "bench_specdec: backend %s: %s\n", backend, err.msg[0] ? err.msg : "not built");
        return 77;
    }
#ifdef VIDI_HAVE_CUDA
    if (exact && vidi_backend_cuda_set_exact(be, 1, &err) != VIDI_OK) {
        fprintf(stderr, "bench_specdec: --exact: %s\n", err.msg);
        return 2;
    }
#else
    if (exact) {
        fprintf(stderr, "bench_specdec: --exact needs the CUDA backend\n");
        return 2;
    }
#endif
    vidi_model *m = NULL;
    vidi_tokenizer *tok = NULL;
    vidi_preproc_config pp;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", model);
    if (vidi_model_load(model, be, &m, &err) || vidi_preproc_config_load(model, &pp, &err) ||
        vidi_tokenizer_load(path, &tok, &err)) {
        fprintf(stderr, "bench_specdec: %s\n", err.msg);
        return 1;
    }
    /* --draft DIR[,DIR]: each draft model runs in turn against the same plain baseline */
    enum { MAX_DRAFTS = 4 };
    vidi_model *dms[MAX_DRAFTS] = {0};
    vidi_preproc_config dpps[MAX_DRAFTS];
    char dnames[MAX_DRAFTS][4096];
    int n_dm = 0;
    for (const char *p = draft; p && *p && n_dm < MAX_DRAFTS;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        snprintf(path, sizeof path, "%.*s", (int)len, p);
        if (vidi_model_load(path, be, &dms[n_dm], &err) || vidi_preproc_config_load(path, &dpps[n_dm], &err)) {
            fprintf(stderr, "bench_specdec: draft %s: %s\n", path, err.msg);
            return 1;
        }
        const char *base = strrchr(path, '/');
        while (base && !base[1] && base > path) { /* a trailing slash */
            path[base - path] = 0;
            base = strrchr(path, '/');
        }
        snprintf(dnames[n_dm], sizeof dnames[n_dm], "%s", base ? base + 1 : path);
        n_dm++;
        p = e ? e + 1 : NULL;
    }
    static const char *const names[3] = {"plain", "ngram", "draft"};
    int rc = 0;
    for (int qa = qa0; qa <= qa1 && !rc; qa++) {
        static prompt ps[MAX_PROMPTS];
        char qp[4096];
        if (qpath) snprintf(qp, sizeof qp, "%s", qpath);
        else snprintf(qp, sizeof qp, "%s/questions.tsv", examples);
        int n_ps = load_prompts(qp, qa, ps);
        if (!n_ps) {
            fprintf(stderr, "bench_specdec: no prompts in %s\n", qp);
            return 1;
        }
        for (int bi = 0; bi < nb && !rc; bi++) {
            int B = bs[bi] < 1 ? 1 : bs[bi] > MAX_B ? MAX_B : bs[bi];
            run_out base;
            memset(&base, 0, sizeof base);
            for (int run = 0; run < 2 + n_dm && !rc; run++) {
                int mode = run < 2 ? run : 2;
                vidi_model *dm = mode == 2 ? dms[run - 2] : NULL;
                vidi_preproc_config dpp = mode == 2 ? dpps[run - 2] : pp;
                run_out o;
                if (run_mode(m, dm, tok, &pp, &dpp, examples, ps, n_ps, B, mode, k, max_tokens, repeat, &o, &err)) {
                    fprintf(stderr, "bench_specdec: %s B=%d %s: %s\n", qa ? "qa" : "caption", B, names[mode], err.msg);
                    rc = 1;
                    break;
                }
                int same = 1;
                if (mode == 0) base = o;
                for (int b = 0; b < o.n_seqs && mode > 0; b++)
                    same &= o.n[b] == base.n[b] && !memcmp(o.tok[b], base.tok[b], (size_t)o.n[b] * sizeof(int32_t));
                /* acceptance at each draft position: accepted / proposed there */
                char at[2][VIDI_SPEC_MAX_K * 24 + 4];
                for (int w = 0; w < 2; w++) {
                    const uint64_t *a = w ? o.st.spec_accepted_at : o.st.spec_proposed_at;
                    size_t u = 0;
                    for (int j = 0; j < k; j++)
                        u += (size_t)snprintf(at[w] + u, sizeof at[w] - u, "%s%llu", j ? ", " : "", (unsigned long long)a[j]);
                }
                printf("{\"workload\": \"%s\", \"batch\": %d, \"sequences\": %d, \"mode\": \"%s\", \"k\": %d, \"tokens\": %lld, "
                       "\"seconds\": %.4f, \"tok_s\": %.1f, \"steps\": %llu, \"proposed\": %llu, \"accepted\": %llu, "
                       "\"emitted\": %llu, \"draft_seconds\": %.4f, \"identical\": %s, \"backend\": \"%s%s\", "
                       "\"draft\": \"%s\", \"proposed_at\": [%s], \"accepted_at\": [%s]}\n",
                       qa ? "qa" : "caption", B, o.n_seqs, names[mode], mode ? k : 0, (long long)o.generated, o.seconds,
                       o.seconds > 0 ? (double)o.generated / o.seconds : 0.0, (unsigned long long)o.st.spec_steps,
                       (unsigned long long)o.st.spec_proposed, (unsigned long long)o.st.spec_accepted,
                       (unsigned long long)o.st.spec_emitted, (double)o.st.draft_ns * 1e-9, same ? "true" : "false", be->name,
                       exact ? " exact" : "", mode == 2 ? dnames[run - 2] : "", at[0], at[1]);
                fflush(stdout);
                if (mode > 0)
                    for (int b = 0; b < o.n_seqs; b++) free(o.tok[b]);
            }
            for (int b = 0; b < base.n_seqs; b++) free(base.tok[b]);
        }
    }
    for (int i = 0; i < n_dm; i++) vidi_model_free(dms[i]);
    vidi_model_free(m);
    vidi_tokenizer_free(tok);
    be->ops->destroy(be);
    return rc;
}
