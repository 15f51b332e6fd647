/* tools/vidi/main.c — the `vidi` command line.
 *
 *   vidi info                 what this build has (backends, devices)
 *   vidi generate ...         one request in one process: chat template,
 *                             tokenizer, vision tower, prefill, sampling,
 *                             streamed text on stdout
 *   vidi media FILE...        what the model would be fed for each image or
 *                             video (tools/vidi/cmd_media.c)
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"
#include "core/npy.h"
#include "kernels/ops.h"
#include "media/media.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "tools/vidi/cmd_media.h"
#include "tools/vidi/cmd_epd.h"
#include "tools/vidi/cmd_worker.h"
#ifdef VIDI_HAVE_CUDA
#include "kernels/cuda/cuda_info.h"
#endif

static int cmd_info(void) {
    printf("vidi 0.1.0\n");
    printf("backends: cpu");
#ifdef VIDI_HAVE_CUDA
    printf(" cuda\n");
    int n = vidi_cuda_device_count();
    printf("cuda devices: %d\n", n);
    for (int i = 0; i < n; i++) {
        char line[256];
        vidi_cuda_device_describe(i, line, sizeof line);
        printf("  %d: %s\n", i, line);
    }
#else
    printf("\n");
#endif
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: vidi <command> [options]\n"
               "commands:\n"
               "  info       what this build has (backends, devices)\n"
               "  generate   answer one prompt (with images/videos) and stream the text\n"
               "  media      what the model would be fed for image/video files\n"
               "  up         start the router and its workers (EPD serving; vidi-shapes on the CPU by default)\n"
               "  ask        send one question to a running router and print the answer\n"
               "  stats      a running router's counters and load monitor (vidi ask --stats)\n"
               "  role       switch a running worker to other roles (drained first)\n"
               "  keygen     a CURVE key pair for an encrypted router front (router --curve-secret-file)\n"
               "  router     the router alone (vidi up starts it)\n"
               "  worker     one worker: media, encode, prefill and/or decode (vidi up starts them)\n"
               "run 'vidi generate --help' or 'vidi media --help' for their options\n");
}

static void usage_generate(FILE *f) {
    fprintf(f,
            "usage: vidi generate --model DIR --prompt TEXT [options]\n"
            "media (any number, in the order they appear in the user turn, before the text):\n"
            "  --pixels FILE.npy --grid T,H,W       an image: f32 [T*H*W, patch_dim] patches\n"
            "  --video-pixels FILE.npy --grid T,H,W [--second-per-grid S]\n"
            "                                       a video; S = temporal_patch_size / fps\n"
            "                                       (default temporal_patch_size / 2.0)\n"
            "  --image FILE                         an image file (JPEG, PNG, WebP, BMP, GIF,\n"
            "                                       TIFF), preprocessed by the media stage\n"
            "  --video FILE [--fps F]               a video file, frames sampled at F per\n"
            "                                       second (default 2) by the media stage\n"
            "options:\n"
            "  --system TEXT          system turn (default: the template's)\n"
            "  --max-tokens N         at most N new tokens (default 128)\n"
            "  --temperature F        0 = greedy (default 0)\n"
            "  --top-k K              keep the K most likely tokens (0 = all, default)\n"
            "  --top-p P              nucleus mass in (0, 1] (default 1)\n"
            "  --seed S               sampling seed (default 0)\n"
            "  --ignore-eos           do not stop at an end-of-sequence token\n"
            "  --logits-out FILE.npy  logits of the first generated position, f32 [vocab]\n"
            "  --ids-out FILE.npy     generated token ids, i32 [n]\n"
            "  --prompt-ids-out FILE.npy  prompt ids with pads expanded, i32 [L]\n"
            "  --backend cpu|cuda     where the model runs (default cpu; cuda in builds with\n"
            "                         the CUDA backend: bf16 weights and activations)\n"
            "  --device N             CUDA device ordinal for --backend cuda (default 0)\n"
            "  --threads N            CPU threads for --backend cpu (default: all)\n"
            "  --stats                token counts and timings on stderr\n");
}

/* ---- argument parsing helpers ---- */

static int parse_long(const char *opt, const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "vidi generate: %s expects an integer in [%ld, %ld], got '%s'\n", opt, lo,
                hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_float(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "vidi generate: %s expects a number in [%g, %g], got '%s'\n", opt, lo, hi,
                s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_grid(const char *s, int32_t g[3]) {
    long v[3];
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        char *end;
        errno = 0;
        v[i] = strtol(p, &end, 10);
        if (errno || end == p || v[i] <= 0 || v[i] > 1000000 || (i < 2 && *end != ',') ||
            (i == 2 && *end)) {
            fprintf(stderr, "vidi generate: --grid expects T,H,W (three positive integers), got "
                            "'%s'\n", s);
            return -1;
        }
        p = end + 1;
    }
    for (int i = 0; i < 3; i++) g[i] = (int32_t)v[i];
    return 0;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

typedef struct cli_media {
    vidi_media_kind kind;
    const char *path;
    int has_grid;
    int has_spgt;
    int32_t grid[3];
    double spgt;
    int from_file;       /* --image / --video: decoded by the media stage */
    double fps;          /* --video sampling rate (0 = default) */
    vidi_npy npy;
} cli_media;

/* Decode and preprocess an --image / --video file with the model's
 * preprocessor config; the patches land in m->npy (so they are freed with
 * the .npy inputs) with the grid and seconds per grid step. */
static int cli_media_from_file(const char *model_dir, cli_media *m, int index) {
    const char *kind = m->kind == VIDI_MEDIA_VIDEO ? "video" : "image";
    vidi_err err = {0};
    vidi_preproc_config pp;
    vidi_media_limits limits = vidi_media_limits_default();
    vidi_media_options opt = vidi_media_options_default();
    vidi_media_item item = {0};
    uint8_t *data = NULL;
    size_t size = 0;
    int ok = 0;
    if (m->fps > 0) opt.video.fps = m->fps;
    if (vidi_preproc_config_load(model_dir, &pp, &err) != VIDI_OK ||
        vidi_media_read_file(m->path, NULL, 0, limits.max_bytes, &data, &size, &err) != VIDI_OK)
        goto done;
    vidi_status rc = m->kind == VIDI_MEDIA_VIDEO
                         ? vidi_media_video_to_item(data, size, &pp, &opt, &limits, &item, &err)
                         : vidi_media_image_to_item(data, size, &pp, &opt, &limits, &item, &err);
    if (rc != VIDI_OK) goto done;
    m->npy.dtype = VIDI_DTYPE_F32;
    m->npy.ndim = 2;
    m->npy.shape[0] = item.rows;
    m->npy.shape[1] = item.cols;
    m->npy.data = item.pixels; /* ownership moves to m->npy */
    item.pixels = NULL;
    memcpy(m->grid, item.grid, sizeof m->grid);
    m->has_grid = 1;
    if (m->kind == VIDI_MEDIA_VIDEO) {
        m->spgt = item.second_per_grid_t;
        m->has_spgt = 1;
    }
    ok = 1;
done:
    if (!ok) fprintf(stderr, "vidi generate: %s %d (%s): %s\n", kind, index, m->path, err.msg);
    vidi_media_item_free(&item);
    free(data);
    return ok ? 0 : -1;
}

typedef struct cli_stream {
    vidi_detok detok;
    int failed;
} cli_stream;

static int cli_on_token(void *user, int32_t token, int index) {
    cli_stream *s = user;
    static char buf[1 << 16]; /* far above 3 * (longest token + 3) + 1 */
    size_t n = 0;
    vidi_err err;
    if (s->failed) return 0;
    if (vidi_detok_push(&s->detok, token, buf, sizeof buf, &n, &err) != VIDI_OK) {
        fprintf(stderr, "\nvidi generate: decoding token %d (id %d): %s\n", index, token, err.msg);
        s->failed = 1;
        return 0;
    }
    if (n) {
        fwrite(buf, 1, n, stdout);
        fflush(stdout);
    }
    return 0;
}

static int cmd_generate(int argc, char **argv) {
    const char *model_dir = NULL, *prompt = NULL, *system = NULL;
    const char *logits_out = NULL, *ids_out = NULL, *prompt_ids_out = NULL;
    long max_tokens = 128, top_k = 0, threads = 0, device = 0;
    const char *backend = "cpu";
    int has_device = 0;
    double temperature = 0.0, top_p = 1.0;
    unsigned long long seed = 0;
    int ignore_eos = 0, stats = 0;
    cli_media *media = NULL;
    int n_media = 0;
    int rc = 1;
    vidi_err err;
    vidi_backend *be = NULL;
    vidi_model *model = NULL;
    vidi_tokenizer *tok = NULL;
    int32_t *expanded = NULL;
    vidi_media *items = NULL;
    vidi_generate_result res = {0};

    media = calloc((size_t)argc, sizeof *media);
    if (!media) {
        fprintf(stderr, "vidi generate: out of memory\n");
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_generate(stdout);
            rc = 0;
            goto done;
        }
        if (!strcmp(a, "--ignore-eos")) {
            ignore_eos = 1;
            continue;
        }
        if (!strcmp(a, "--stats")) {
            stats = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "vidi generate: %s needs a value\n", a);
            goto usage_fail;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--model")) {
            model_dir = v;
        } else if (!strcmp(a, "--prompt")) {
            prompt = v;
        } else if (!strcmp(a, "--system")) {
            system = v;
        } else if (!strcmp(a, "--pixels") || !strcmp(a, "--video-pixels")) {
            cli_media *m = &media[n_media++];
            m->kind = a[2] == 'v' ? VIDI_MEDIA_VIDEO : VIDI_MEDIA_IMAGE;
            m->path = v;
        } else if (!strcmp(a, "--image") || !strcmp(a, "--video")) {
            cli_media *m = &media[n_media++];
            m->kind = a[2] == 'v' ? VIDI_MEDIA_VIDEO : VIDI_MEDIA_IMAGE;
            m->path = v;
            m->from_file = 1;
        } else if (!strcmp(a, "--fps")) {
            if (!n_media || !media[n_media - 1].from_file ||
                media[n_media - 1].kind != VIDI_MEDIA_VIDEO || media[n_media - 1].fps > 0) {
                fprintf(stderr, "vidi generate: --fps must follow a --video (once per video)\n");
                goto usage_fail;
            }
            if (parse_float(a, v, 1e-3, 1000.0, &media[n_media - 1].fps)) goto usage_fail;
        } else if (!strcmp(a, "--grid")) {
            if (!n_media || media[n_media - 1].has_grid) {
                fprintf(stderr, "vidi generate: --grid must follow a --pixels or --video-pixels "
                                "that has no grid yet\n");
                goto usage_fail;
            }
            if (parse_grid(v, media[n_media - 1].grid)) goto usage_fail;
            media[n_media - 1].has_grid = 1;
        } else if (!strcmp(a, "--second-per-grid")) {
            if (!n_media || media[n_media - 1].kind != VIDI_MEDIA_VIDEO ||
                media[n_media - 1].has_spgt) {
                fprintf(stderr, "vidi generate: --second-per-grid must follow a --video-pixels "
                                "(once per video)\n");
                goto usage_fail;
            }
            if (parse_float(a, v, 0.0, 1e6, &media[n_media - 1].spgt)) goto usage_fail;
            media[n_media - 1].has_spgt = 1;
        } else if (!strcmp(a, "--max-tokens")) {
            if (parse_long(a, v, 1, 1 << 20, &max_tokens)) goto usage_fail;
        } else if (!strcmp(a, "--temperature")) {
            if (parse_float(a, v, 0.0, 100.0, &temperature)) goto usage_fail;
        } else if (!strcmp(a, "--top-k")) {
            if (parse_long(a, v, 0, INT_MAX, &top_k)) goto usage_fail;
        } else if (!strcmp(a, "--top-p")) {
            if (parse_float(a, v, 0.0, 1.0, &top_p) || top_p <= 0.0) {
                if (top_p <= 0.0) fprintf(stderr, "vidi generate: --top-p must be in (0, 1]\n");
                goto usage_fail;
            }
        } else if (!strcmp(a, "--seed")) {
            char *end;
            errno = 0;
            seed = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-') {
                fprintf(stderr, "vidi generate: --seed expects a non-negative integer, got '%s'\n",
                        v);
                goto usage_fail;
            }
        } else if (!strcmp(a, "--logits-out")) {
            logits_out = v;
        } else if (!strcmp(a, "--ids-out")) {
            ids_out = v;
        } else if (!strcmp(a, "--prompt-ids-out")) {
            prompt_ids_out = v;
        } else if (!strcmp(a, "--threads")) {
            if (parse_long(a, v, 0, 4096, &threads)) goto usage_fail;
        } else if (!strcmp(a, "--backend")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "vidi generate: --backend expects cpu or cuda, got '%s'\n", v);
                goto usage_fail;
            }
            backend = v;
        } else if (!strcmp(a, "--device")) {
            if (parse_long(a, v, 0, 1023, &device)) goto usage_fail;
            has_device = 1;
        } else {
            fprintf(stderr, "vidi generate: unknown option '%s'\n", a);
            goto usage_fail;
        }
    }
    if (!model_dir || !prompt) {
        fprintf(stderr, "vidi generate: --model and --prompt are required\n");
        goto usage_fail;
    }
    int use_cuda = !strcmp(backend, "cuda");
    if (has_device && !use_cuda) {
        fprintf(stderr, "vidi generate: --device is for --backend cuda\n");
        goto usage_fail;
    }
#ifndef VIDI_HAVE_CUDA
    if (use_cuda) {
        fprintf(stderr, "vidi generate: this vidi was built without the CUDA backend "
                        "(configure with -DVIDI_CUDA=ON on a machine with nvcc); use --backend "
                        "cpu\n");
        goto done;
    }
#endif

    /* ---- files first: cheap checks before anything is loaded ---- */
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    if (!file_exists(path)) {
        fprintf(stderr, "vidi generate: %s is not a model folder (no config.json)\n", model_dir);
        goto done;
    }
    char tok_path[4096];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", model_dir);
    if (!file_exists(tok_path)) {
        fprintf(stderr, "vidi generate: %s has no tokenizer.json\n", model_dir);
        goto done;
    }
    for (int i = 0; i < n_media; i++) {
        cli_media *m = &media[i];
        const char *kind = m->kind == VIDI_MEDIA_VIDEO ? "video" : "image";
        if (m->from_file) {
            if (m->has_grid) {
                fprintf(stderr, "vidi generate: %s %d (%s): --grid is for .npy patches; a file "
                                "gets its grid from the media stage\n", kind, i, m->path);
                goto done;
            }
            if (cli_media_from_file(model_dir, m, i)) goto done;
            continue;
        }
        if (!m->has_grid) {
            fprintf(stderr, "vidi generate: %s %d (%s) has no --grid T,H,W after it\n", kind, i,
                    m->path);
            goto done;
        }
        if (!file_exists(m->path)) {
            fprintf(stderr, "vidi generate: %s %d: no such file '%s'\n", kind, i, m->path);
            goto done;
        }
        if (vidi_npy_read(m->path, &m->npy, &err) != VIDI_OK) {
            fprintf(stderr, "vidi generate: %s %d: %s\n", kind, i, err.msg);
            goto done;
        }
        if (m->npy.dtype != VIDI_DTYPE_F32 || m->npy.ndim != 2) {
            fprintf(stderr, "vidi generate: %s %d: %s must be a 2-D float array [T*H*W, "
                            "patch_dim], got %d-D %s\n", kind, i, m->path, m->npy.ndim,
                    vidi_dtype_name(m->npy.dtype));
            goto done;
        }
    }

    /* ---- model and tokenizer ---- */
    if (use_cuda) {
#ifdef VIDI_HAVE_CUDA
        int n_dev = vidi_cuda_device_count();
        if (device >= n_dev) {
            fprintf(stderr, "vidi generate: --device %ld but this machine has %d CUDA device%s "
                            "(see 'vidi info')\n", device, n_dev, n_dev == 1 ? "" : "s");
            goto done;
        }
        be = vidi_backend_cuda_create((int)device, &err);
        if (!be) {
            fprintf(stderr, "vidi generate: CUDA backend on device %ld: %s\n", device, err.msg);
            goto done;
        }
#endif
    } else {
        be = vidi_backend_cpu_create((int)threads, &err);
        if (!be) {
            fprintf(stderr, "vidi generate: CPU backend: %s\n", err.msg);
            goto done;
        }
    }
    if (vidi_model_load(model_dir, be, &model, &err) != VIDI_OK) {
        fprintf(stderr, "vidi generate: %s\n", err.msg);
        goto done;
    }
    const vidi_model_config *cfg = &model->cfg;
    if (vidi_tokenizer_load(tok_path, &tok, &err) != VIDI_OK) {
        fprintf(stderr, "vidi generate: %s\n", err.msg);
        goto done;
    }

    /* ---- media against the model ---- */
    int64_t patch_dim = vidi_media_patch_dim(cfg);
    items = calloc((size_t)(n_media ? n_media : 1), sizeof *items);
    if (!items) goto oom;
    for (int i = 0; i < n_media; i++) {
        cli_media *m = &media[i];
        const char *kind = m->kind == VIDI_MEDIA_VIDEO ? "video" : "image";
        if (m->npy.shape[1] != patch_dim) {
            fprintf(stderr, "vidi generate: %s %d: %s has rows of %lld values but this model "
                            "takes %lld (channels x temporal patch x patch^2)\n", kind, i, m->path,
                    (long long)m->npy.shape[1], (long long)patch_dim);
            goto done;
        }
        if (m->kind == VIDI_MEDIA_IMAGE && m->grid[0] != 1)
            fprintf(stderr, "vidi generate: warning: image %d has grid t = %d (the image "
                            "processor gives 1)\n", i, m->grid[0]);
        items[i].kind = m->kind;
        items[i].pixels = m->npy.data;
        items[i].n_rows = m->npy.shape[0];
        memcpy(items[i].grid, m->grid, sizeof m->grid);
        items[i].second_per_grid_t =
            (float)(m->has_spgt ? m->spgt : (double)cfg->vision.temporal_patch_size / 2.0);
        if (vidi_media_check(cfg, &items[i], i, 1, &err) != VIDI_OK) {
            fprintf(stderr, "vidi generate: %s (%s)\n", err.msg, m->path);
            goto done;
        }
    }

    /* ---- the prompt: chat template, media in order then text, pads expanded ---- */
    int64_t total = 0;
    if (vidi_prompt_build(cfg, tok, system, prompt, items, n_media, &expanded, &total, &err) != VIDI_OK) {
        fprintf(stderr, "vidi generate: %s\n", err.msg);
        goto done;
    }
    if (prompt_ids_out) {
        int64_t shape[1] = {total};
        if (vidi_npy_write(prompt_ids_out, VIDI_DTYPE_I32, 1, shape, expanded, &err) != VIDI_OK) {
            fprintf(stderr, "vidi generate: %s\n", err.msg);
            goto done;
        }
    }

    /* ---- run, streaming the text ---- */
    cli_stream stream = {0};
    vidi_detok_init(&stream.detok, tok, 1);
    vidi_generate_params gp = vidi_generate_params_default();
    gp.max_tokens = (int)max_tokens;
    gp.sample.temperature = (float)temperature;
    gp.sample.top_k = (int)top_k;
    gp.sample.top_p = (float)top_p;
    gp.seed = seed;
    gp.stop_at_eos = !ignore_eos;
    gp.want_first_logits = logits_out != NULL;
    gp.on_token = cli_on_token;
    gp.user = &stream;
    if (vidi_generate(model, expanded, total, items, n_media, &gp, &res, &err) != VIDI_OK) {
        fprintf(stderr, "\nvidi generate: %s\n", err.msg);
        goto done;
    }
    char tail[64];
    size_t nt = 0;
    if (vidi_detok_flush(&stream.detok, tail, sizeof tail, &nt, &err) == VIDI_OK && nt)
        fwrite(tail, 1, nt, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    if (stream.failed) goto done;

    if (logits_out) {
        int64_t shape[1] = {res.vocab};
        if (vidi_npy_write(logits_out, VIDI_DTYPE_F32, 1, shape, res.first_logits, &err) != VIDI_OK) {
            fprintf(stderr, "vidi generate: %s\n", err.msg);
            goto done;
        }
    }
    if (ids_out) {
        int64_t shape[1] = {res.n_tokens};
        if (vidi_npy_write(ids_out, VIDI_DTYPE_I32, 1, shape, res.tokens, &err) != VIDI_OK) {
            fprintf(stderr, "vidi generate: %s\n", err.msg);
            goto done;
        }
    }
    if (stats) {
        static const char *finish[] = {"length", "eos", "callback"};
        double dec_rate = res.n_tokens > 1 && res.decode_s > 0 ? (res.n_tokens - 1) / res.decode_s : 0;
        fprintf(stderr, "prompt %lld tokens, generated %d (%s), rope_delta %lld\n"
                        "encode %.3f s, prefill %.3f s (%.1f tok/s), decode %.3f s (%.1f tok/s)\n",
                (long long)res.prompt_tokens, res.n_tokens, finish[res.finish],
                (long long)res.rope_delta, res.encode_s, res.prefill_s,
                res.prefill_s > 0 ? res.prompt_tokens / res.prefill_s : 0.0, res.decode_s, dec_rate);
        fprintf(stderr, "backend %s\n", be->name);
    }
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "vidi generate: out of memory\n");
    goto done;
usage_fail:
    fprintf(stderr, "run 'vidi generate --help' for usage\n");
    rc = 2;
done:
    vidi_generate_result_free(&res);
    free(expanded);
    free(items);
    for (int i = 0; i < n_media; i++) vidi_npy_free(&media[i].npy);
    free(media);
    vidi_tokenizer_free(tok);
    vidi_model_free(model);
    if (be) be->ops->destroy(be);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "info")) return cmd_info();
    if (!strcmp(argv[1], "generate")) return cmd_generate(argc, argv);
    if (!strcmp(argv[1], "media")) return vidi_cmd_media(argc, argv);
    if (!strcmp(argv[1], "worker")) return vidi_cmd_worker(argc, argv);
    if (!strcmp(argv[1], "router")) return vidi_cmd_router(argc, argv);
    if (!strcmp(argv[1], "up")) return vidi_cmd_up(argc, argv);
    if (!strcmp(argv[1], "ask")) return vidi_cmd_ask(argc, argv);
    if (!strcmp(argv[1], "stats")) { /* vidi ask --stats [--router EP] */
        char *av[16];
        int ac = 0;
        av[ac++] = argv[0], av[ac++] = (char *)"ask", av[ac++] = (char *)"--stats";
        for (int i = 2; i < argc && ac < 15; i++) av[ac++] = argv[i];
        av[ac] = NULL;
        return vidi_cmd_ask(ac, av);
    }
    if (!strcmp(argv[1], "keygen")) return vidi_cmd_keygen(argc, argv);
    if (!strcmp(argv[1], "role")) return vidi_cmd_role(argc, argv);
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "vidi: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
