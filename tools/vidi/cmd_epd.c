/* tools/vidi/cmd_epd.c — the EPD programs: `vidi router`, `vidi up` (the
 * router and its workers as child processes, restarted when they die) and
 * `vidi ask` (a client: one question, its answer streamed).
 */
#include "tools/vidi/cmd_epd.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "ipc/conn.h"
#include "ipc/router.h"
#include "ipc/sock.h"
#include "media/media.h"

static volatile sig_atomic_t g_stop;
static void s_on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void s_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* $XDG_RUNTIME_DIR/vidi or /tmp/vidi-UID */
static void s_run_dir(char *out, size_t cap) {
    const char *x = getenv("XDG_RUNTIME_DIR");
    if (x && *x) snprintf(out, cap, "%s/vidi", x);
    else snprintf(out, cap, "/tmp/vidi-%d", (int)getuid());
}

/* ------------------------------------------------------------ vidi router */

/* vidi keygen: a CURVE key pair for the router's front (public, then secret). */
int vidi_cmd_keygen(int argc, char **argv) {
    (void)argc;
    (void)argv;
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0) {
        fprintf(stderr, "vidi keygen: %s (libzmq without CURVE?)\n", zmq_strerror(errno));
        return 1;
    }
    printf("public %s\nsecret %s\n", pub, sec);
    return 0;
}

/* vidi router's option a with value v: a whole number in [lo, hi] into *x,
 * else 1 after saying what was expected ("a whole number<unit>, lo to hi"). */
static int s_whole(const char *a, const char *v, const char *unit, long long lo, long long hi, long long *x) {
    char *end = NULL;
    *x = strtoll(v, &end, 10);
    if (end && end != v && !*end && *x >= lo && *x <= hi) return 0;
    fprintf(stderr, "vidi router: %s %s: a whole number%s, %lld to %lld\n", a, v, unit, lo, hi);
    return 1;
}

int vidi_cmd_router(int argc, char **argv) {
    vidi_router_config cfg = vidi_router_config_default();
    char dir[512], front[600], back[600], curve[64];
    s_run_dir(dir, sizeof dir);
    snprintf(front, sizeof front, "ipc://%s/front", dir);
    snprintf(back, sizeof back, "ipc://%s/back", dir);
    cfg.front = front;
    cfg.back = back;
    cfg.model_dir = "models/vidi-shapes";
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--verbose")) {
            cfg.verbose = 1;
            continue;
        }
        if (!strcmp(a, "--no-cache")) {
            cfg.use_cache = 0;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help") || !v) {
            fprintf(v ? stdout : stderr,
                    "usage: vidi router [--front EP] [--back EP] [--model DIR] [--max-requests N]\n"
                    "       [--heartbeat-ms N] [--liveness N] [--stage-timeout-ms N] [--request-timeout-ms N]\n"
                    "       [--max-split N] [--max-attempts N] [--no-cache] [--verbose]\n"
                    "       [--ttft-ms N] [--tpot-ms N]  (the load monitor's latency targets: 2000, 100)\n"
                    "       [--switch-ms N]  (switch workers' roles by load, looking every N ms; 0, the\n"
                    "        default: never) [--switch-windows N] (2) [--switch-cooldown-ms N] (2 x N)\n"
                    "       [--switch-hi PCT] (70) [--switch-lo PCT] (30) [--switch-drain-ms N] (60000)\n"
                    "       [--switch-share 0|1]  (1: a worker whose stage cannot spare it takes the\n"
                    "        starved role besides its own; 0, the default: workers move)\n"
                    "       [--curve-secret-file FILE]  (front encrypted with CURVE; FILE holds the Z85\n"
                    "        secret key, `vidi keygen` makes a pair)\n");
            return v ? 0 : 2;
        }
        i++;
        if (!strcmp(a, "--front")) cfg.front = v;
        else if (!strcmp(a, "--back")) cfg.back = v;
        else if (!strcmp(a, "--model")) cfg.model_dir = v;
        else if (!strcmp(a, "--max-requests")) cfg.max_requests = atoi(v);
        else if (!strcmp(a, "--heartbeat-ms")) cfg.heartbeat_ms = atoll(v);
        else if (!strcmp(a, "--liveness")) cfg.liveness = atoi(v);
        else if (!strcmp(a, "--stage-timeout-ms")) cfg.stage_timeout_ms = atoll(v);
        else if (!strcmp(a, "--request-timeout-ms")) cfg.request_timeout_ms = atoll(v);
        else if (!strcmp(a, "--max-split")) cfg.max_split = atoi(v);
        else if (!strcmp(a, "--max-attempts")) cfg.max_attempts = atoi(v);
        else if (!strcmp(a, "--ttft-ms") || !strcmp(a, "--tpot-ms")) {
            long long x;
            if (s_whole(a, v, " of milliseconds", 1, 3600000, &x)) return 2;
            *(!strcmp(a, "--ttft-ms") ? &cfg.ttft_ms : &cfg.tpot_ms) = x;
        }
        else if (!strncmp(a, "--switch-", 9)) {
            long long x;
            int pct = !strcmp(a, "--switch-hi") || !strcmp(a, "--switch-lo"), flag = !strcmp(a, "--switch-share");
            if (s_whole(a, v, "", 0, flag ? 1 : pct ? 100 : 3600000, &x)) return 2;
            if (!strcmp(a, "--switch-ms")) cfg.switch_ms = x;
            else if (!strcmp(a, "--switch-windows")) cfg.switch_windows = (int)x;
            else if (!strcmp(a, "--switch-cooldown-ms")) cfg.switch_cooldown_ms = x;
            else if (!strcmp(a, "--switch-hi")) cfg.switch_hi = (int)x;
            else if (!strcmp(a, "--switch-lo")) cfg.switch_lo = (int)x;
            else if (!strcmp(a, "--switch-drain-ms")) cfg.switch_drain_ms = x;
            else if (flag) cfg.switch_share = (int)x;
            else {
                fprintf(stderr, "vidi router: unknown option %s\n", a);
                return 2;
            }
        }
        else if (!strcmp(a, "--curve-secret-file")) {
            FILE *f = fopen(v, "r");
            if (!f || !fgets(curve, sizeof curve, f)) {
                fprintf(stderr, "vidi router: cannot read the CURVE secret key from %s\n", v);
                if (f) fclose(f);
                return 2;
            }
            fclose(f);
            curve[strcspn(curve, "\r\n")] = 0;
            if (strlen(curve) != 40) {
                fprintf(stderr, "vidi router: %s: a CURVE secret key is 40 Z85 characters\n", v);
                return 2;
            }
            cfg.curve_secret = curve;
        } else {
            fprintf(stderr, "vidi router: unknown option %s\n", a);
            return 2;
        }
    }
    if (cfg.max_requests <= 0 || cfg.max_attempts <= 0 || cfg.heartbeat_ms <= 0 || cfg.liveness <= 0 || cfg.stage_timeout_ms <= 0 ||
        cfg.request_timeout_ms <= 0 || cfg.switch_windows < 1 || cfg.switch_drain_ms < 1 || cfg.switch_lo > cfg.switch_hi) {
        fprintf(stderr, "vidi router: limits and intervals must be positive (and --switch-lo at most --switch-hi)\n");
        return 2;
    }
    mkdir(dir, 0700);
    s_signals();
    vidi_err err = {0};
    if (vidi_router_run(&cfg, &g_stop, &err) != VIDI_OK) {
        fprintf(stderr, "vidi router: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- vidi up */

#define UP_MAX 32

typedef struct child {
    char *argv[40];
    int argc;
    char label[256];
    pid_t pid;
    int64_t started_ms, next_start_ms;
    int restarts;
    int role_arg;        /* a worker: argv's index of its --role value, else 0 */
    char roles_file[720]; /* a worker: where it writes its roles after a switch */
} child;

static void s_child_add(child *c, const char *label) {
    memset(c, 0, sizeof *c);
    snprintf(c->label, sizeof c->label, "%s", label);
}

static void s_arg(child *c, const char *a) {
    if (c->argc < 39) c->argv[c->argc++] = strdup(a);
}

static pid_t s_spawn(child *c) {
    pid_t p = fork();
    if (p == 0) {
        setpgid(0, 0);
        execv("/proc/self/exe", c->argv);
        fprintf(stderr, "vidi up: exec %s: %s\n", c->label, strerror(errno));
        _exit(127);
    }
    if (p > 0) {
        c->pid = p;
        c->started_ms = vidi_now_ms();
    }
    return p;
}

/* A worker about to be restarted takes the roles it wrote to its roles file
 * after its last switch (role names and commas only), in place of those of
 * its command line. */
static void s_restart_roles(child *c) {
    if (!c->role_arg || !c->roles_file[0]) return;
    FILE *f = fopen(c->roles_file, "r");
    if (!f) return;
    char r[128] = "";
    int ok = fgets(r, sizeof r, f) != NULL;
    fclose(f);
    r[strcspn(r, "\n")] = 0;
    ok = ok && r[0] && strspn(r, "abcdefghijklmnopqrstuvwxyz,") == strlen(r);
    if (!ok) {
        fprintf(stderr, "vidi up: %s: %s is not a roles list; restarting with its own\n", c->label, c->roles_file);
        return;
    }
    if (!strcmp(c->argv[c->role_arg], r)) return;
    fprintf(stderr, "vidi up: %s restarts as %s (its roles since its last switch)\n", c->label, r);
    free(c->argv[c->role_arg]);
    c->argv[c->role_arg] = strdup(r);
}

static void s_write_pids(const char *dir, child *cs, int n) {
    char path[700], tmp[720];
    snprintf(path, sizeof path, "%s/pids", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    for (int i = 0; i < n; i++) fprintf(f, "%s %d\n", cs[i].label, (int)cs[i].pid);
    fclose(f);
    rename(tmp, path);
}

/* A config file for `vidi up`: one "key = value" per line (# comments), the
 * keys being the long options without "--" (model, workers, run-dir, front,
 * back, backend, threads, heartbeat-ms, router-args, worker-args; "tcp-data = 1"). Its
 * settings come first; options on the command line override them. Returns
 * a new argv (malloc'd strings, freed by the caller) or NULL. */
static char **s_up_config(const char *path, int argc, char **argv, int *out_argc) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "vidi up: --config %s: %s\n", path, strerror(errno));
        return NULL;
    }
    int cap = argc + 64, n = 0;
    char **av = calloc((size_t)cap + 1, sizeof *av);
    char line[1024];
    int lineno = 0, bad = 0;
    av[n++] = strdup(argv[0]);
    av[n++] = strdup(argv[1]);
    while (av && fgets(line, sizeof line, f) && n < cap - 2) {
        lineno++;
        char *p = line + strspn(line, " \t");
        p[strcspn(p, "\r\n")] = 0;
        if (!*p || *p == '#') continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            fprintf(stderr, "vidi up: %s:%d: expected 'key = value'\n", path, lineno);
            bad = 1;
            break;
        }
        char *k = p, *v = eq + 1;
        *eq = 0;
        for (char *e = eq - 1; e >= k && (*e == ' ' || *e == '\t'); e--) *e = 0;
        v += strspn(v, " \t");
        for (char *e = v + strlen(v) - 1; e >= v && (*e == ' ' || *e == '\t'); e--) *e = 0;
        char opt[128];
        snprintf(opt, sizeof opt, "--%s", k);
        if (!strcmp(k, "tcp-data")) {
            if (strcmp(v, "0")) av[n++] = strdup(opt);
            continue;
        }
        av[n++] = strdup(opt);
        av[n++] = strdup(v);
    }
    fclose(f);
    for (int i = 2; av && !bad && i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            i++;
            continue;
        }
        if (n < cap) av[n++] = strdup(argv[i]);
    }
    if (bad || !av) {
        for (int i = 0; av && i < n; i++) free(av[i]);
        free(av);
        return NULL;
    }
    *out_argc = n;
    return av;
}

int vidi_cmd_up(int argc, char **argv) {
    for (int i = 2; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--config")) {
            int n = 0;
            char **av = s_up_config(argv[i + 1], argc, argv, &n);
            if (!av) return 2;
            int rc = vidi_cmd_up(n, av);
            for (int k = 0; k < n; k++) free(av[k]);
            free(av);
            return rc;
        }
    char dir[512];
    s_run_dir(dir, sizeof dir);
    const char *model = "models/vidi-shapes", *workers = "all", *backend = "cpu", *threads = NULL;
    const char *front = NULL, *back = NULL, *extra_router = NULL, *extra_worker = NULL, *heartbeat = NULL;
    int tcp_data = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tcp-data")) {
            tcp_data = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help") || !v) {
            fprintf(v ? stdout : stderr,
                    "usage: vidi up [--config FILE] [--model DIR] [--workers SPEC] [--run-dir DIR] [--front EP] [--back EP]\n"
                    "               [--backend cpu|cuda] [--threads N] [--heartbeat-ms N] [--tcp-data]\n"
                    "               [--router-args \"...\"] [--worker-args \"...\"] (extra options of every worker)\n"
                    "  SPEC: one worker per comma, its roles joined by '+', e.g. 'all' (the default, one\n"
                    "        colocated worker) or 'media,encode,encode,prefill+decode'. A worker may end\n"
                    "        with @N for CUDA device N.\n"
                    "Starts the router and the workers, restarts any that dies, stops on SIGINT/SIGTERM.\n"
                    "FILE: 'key = value' lines, keys as the long options (e.g. workers = media,encode,prefill+decode).\n"
                    "The processes' ids are written to RUN_DIR/pids. Workers bind their data sockets at\n"
                    "ipc://RUN_DIR/wN.data, or with --tcp-data at tcp://127.0.0.1 on a free port.\n");
            return v ? 0 : 2;
        }
        i++;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--workers")) workers = v;
        else if (!strcmp(a, "--run-dir")) snprintf(dir, sizeof dir, "%s", v);
        else if (!strcmp(a, "--front")) front = v;
        else if (!strcmp(a, "--back")) back = v;
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--threads")) threads = v;
        else if (!strcmp(a, "--router-args")) extra_router = v;
        else if (!strcmp(a, "--worker-args")) extra_worker = v;
        else if (!strcmp(a, "--heartbeat-ms")) heartbeat = v;
        else {
            fprintf(stderr, "vidi up: unknown option %s\n", a);
            return 2;
        }
    }
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", model);
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "vidi up: no model at %s (%s)\n", model, strerror(errno));
        return 2;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "vidi up: run dir %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char fr[700], bk[700];
    snprintf(fr, sizeof fr, "ipc://%s/front", dir);
    snprintf(bk, sizeof bk, "ipc://%s/back", dir);
    if (!front) front = fr;
    if (!back) back = bk;

    child cs[UP_MAX];
    int n = 0;
    s_child_add(&cs[n], "router");
    s_arg(&cs[n], "vidi");
    s_arg(&cs[n], "router");
    s_arg(&cs[n], "--front");
    s_arg(&cs[n], front);
    s_arg(&cs[n], "--back");
    s_arg(&cs[n], back);
    s_arg(&cs[n], "--model");
    s_arg(&cs[n], model);
    if (heartbeat) {
        s_arg(&cs[n], "--heartbeat-ms");
        s_arg(&cs[n], heartbeat);
    }
    if (extra_router) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", extra_router);
        for (char *save = NULL, *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) s_arg(&cs[n], t);
    }
    n++;
    char spec[1024];
    snprintf(spec, sizeof spec, "%s", workers);
    for (char *save = NULL, *t = strtok_r(spec, ",", &save); t && n < UP_MAX; t = strtok_r(NULL, ",", &save)) {
        char roles[128], label[256], data[800], name[64];
        snprintf(roles, sizeof roles, "%s", t);
        char *at = strchr(roles, '@');
        const char *device = NULL;
        if (at) {
            *at = 0;
            device = at + 1;
        }
        for (char *p = roles; *p; p++)
            if (*p == '+') *p = ',';
        snprintf(name, sizeof name, "w%d", n - 1);
        snprintf(label, sizeof label, "worker %s (%s)", name, roles);
        if (tcp_data) snprintf(data, sizeof data, "tcp://127.0.0.1:*");
        else snprintf(data, sizeof data, "ipc://%s/%s.data", dir, name);
        s_child_add(&cs[n], label);
        s_arg(&cs[n], "vidi");
        s_arg(&cs[n], "worker");
        s_arg(&cs[n], "--router");
        s_arg(&cs[n], back);
        s_arg(&cs[n], "--data");
        s_arg(&cs[n], data);
        s_arg(&cs[n], "--model");
        s_arg(&cs[n], model);
        s_arg(&cs[n], "--role");
        cs[n].role_arg = cs[n].argc;
        s_arg(&cs[n], roles);
        s_arg(&cs[n], "--name");
        s_arg(&cs[n], name);
        snprintf(cs[n].roles_file, sizeof cs[n].roles_file, "%s/%s.roles", dir, name);
        unlink(cs[n].roles_file); /* a fresh start takes the command line's roles */
        s_arg(&cs[n], "--roles-file");
        s_arg(&cs[n], cs[n].roles_file);
        s_arg(&cs[n], "--backend");
        s_arg(&cs[n], backend);
        if (device) {
            s_arg(&cs[n], "--device");
            s_arg(&cs[n], device);
        }
        if (threads) {
            s_arg(&cs[n], "--threads");
            s_arg(&cs[n], threads);
        }
        if (heartbeat) {
            s_arg(&cs[n], "--heartbeat-ms");
            s_arg(&cs[n], heartbeat);
        }
        if (extra_worker) {
            char buf[1024];
            snprintf(buf, sizeof buf, "%s", extra_worker);
            for (char *save = NULL, *x = strtok_r(buf, " ", &save); x; x = strtok_r(NULL, " ", &save)) s_arg(&cs[n], x);
        }
        n++;
    }
    for (int i = 0; i < n; i++) cs[i].argv[cs[i].argc] = NULL;
    s_signals();
    for (int i = 0; i < n; i++)
        if (s_spawn(&cs[i]) < 0) fprintf(stderr, "vidi up: fork: %s\n", strerror(errno));
    s_write_pids(dir, cs, n);
    fprintf(stderr, "vidi up: router on %s (workers on %s), %d workers; pids in %s/pids\n", front, back, n - 1, dir);
    int rc = 0;
    while (!g_stop) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        int64_t now = vidi_now_ms();
        if (p > 0) {
            for (int i = 0; i < n; i++)
                if (cs[i].pid == p) {
                    cs[i].pid = 0;
                    /* A process that exits or crashes within 3 s of starting is failing
                     * to start (bad model, endpoint taken): back off 1 s doubling to
                     * 30 s. One that ran longer, or was killed (SIGKILL, the OOM killer,
                     * an operator), is restarted at once. */
                    int64_t lived = now - cs[i].started_ms;
                    int64_t wait = 200;
                    int killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
                    if (lived < 3000 && !killed) {
                        wait = 1000LL << (cs[i].restarts < 5 ? cs[i].restarts : 5);
                        if (wait > 30000) wait = 30000;
                        cs[i].restarts++;
                    } else {
                        cs[i].restarts = 0;
                    }
                    cs[i].next_start_ms = now + wait;
                    fprintf(stderr, "vidi up: %s (pid %d) %s %d; restarting in %lld ms\n", cs[i].label, (int)p,
                            WIFSIGNALED(status) ? "killed by signal" : "exited with",
                            WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                            (long long)(cs[i].next_start_ms - now));
                }
            continue;
        }
        int changed = 0;
        for (int i = 0; i < n; i++)
            if (!cs[i].pid && now >= cs[i].next_start_ms) {
                s_restart_roles(&cs[i]);
                s_spawn(&cs[i]);
                changed = 1;
            }
        if (changed) s_write_pids(dir, cs, n);
        usleep(50000);
    }
    fprintf(stderr, "vidi up: stopping\n");
    for (int i = n - 1; i >= 0; i--)
        if (cs[i].pid > 0) kill(cs[i].pid, SIGTERM);
    int64_t until = vidi_now_ms() + 5000;
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++)
            if (cs[i].pid > 0) {
                if (waitpid(cs[i].pid, NULL, WNOHANG) == cs[i].pid) cs[i].pid = 0;
                else left++;
            }
        if (!left) break;
        if (vidi_now_ms() > until) {
            for (int i = 0; i < n; i++)
                if (cs[i].pid > 0) {
                    kill(cs[i].pid, SIGKILL);
                    waitpid(cs[i].pid, NULL, 0);
                    cs[i].pid = 0;
                }
            rc = 1;
            break;
        }
        usleep(20000);
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < cs[i].argc; k++) free(cs[i].argv[k]);
    return rc;
}

/* --------------------------------------------------------------- vidi ask */

int vidi_cmd_ask(int argc, char **argv) {
    char dir[512], front[600];
    s_run_dir(dir, sizeof dir);
    snprintf(front, sizeof front, "ipc://%s/front", dir);
    const char *router = front, *prompt = NULL, *system = NULL;
    vidi_conn_media media[16];
    char *bufs[16] = {0};
    int n_media = 0, stats = 0, quiet = 0;
    long timeout_s = 120;
    vidi_conn_request rq = vidi_conn_request_default();
    memset(media, 0, sizeof media);
    int rc = 1;
    vidi_err err = {0};
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--stats")) {
            stats = 1;
            continue;
        }
        if (!strcmp(a, "--no-stream")) {
            rq.stream = 0;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help") || !v) {
            fprintf(v ? stdout : stderr,
                    "usage: vidi ask [--router EP] --prompt TEXT [--image FILE]... [--video FILE [--fps F]]...\n"
                    "       [--system TEXT] [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]\n"
                    "       [--no-stream] [--timeout-s N] [--quiet]\n"
                    "       vidi ask [--router EP] --stats\n"
                    "Prints the answer; with --quiet only the finish line goes to stderr.\n");
            rc = v ? 0 : 2;
            goto done;
        }
        i++;
        if (!strcmp(a, "--router")) router = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--system")) system = v;
        else if (!strcmp(a, "--max-tokens")) rq.sampling.max_tokens = (uint64_t)atoll(v);
        else if (!strcmp(a, "--temperature")) rq.sampling.temperature = atof(v);
        else if (!strcmp(a, "--top-p")) rq.sampling.top_p = atof(v);
        else if (!strcmp(a, "--top-k")) rq.sampling.top_k = (uint64_t)atoll(v);
        else if (!strcmp(a, "--seed")) rq.sampling.seed = strtoull(v, NULL, 10), rq.sampling.has_seed = 1;
        else if (!strcmp(a, "--timeout-s")) timeout_s = atol(v);
        else if (!strcmp(a, "--fps")) {
            if (n_media) media[n_media - 1].fps = atof(v);
        } else if (!strcmp(a, "--image") || !strcmp(a, "--video")) {
            if (n_media == 16) {
                fprintf(stderr, "vidi ask: at most 16 media files\n");
                goto done;
            }
            uint8_t *data = NULL;
            size_t size = 0;
            if (vidi_media_read_file(v, NULL, 0, (int64_t)1 << 30, &data, &size, &err) != VIDI_OK) {
                fprintf(stderr, "vidi ask: %s\n", err.msg);
                goto done;
            }
            bufs[n_media] = (char *)data;
            media[n_media].video = !strcmp(a, "--video");
            media[n_media].bytes = data;
            media[n_media].n = size;
            n_media++;
        } else {
            fprintf(stderr, "vidi ask: unknown option %s\n", a);
            rc = 2;
            goto done;
        }
    }
    if (!prompt && !stats) {
        fprintf(stderr, "vidi ask: --prompt is required\n");
        rc = 2;
        goto done;
    }
    vidi_conn *c = NULL;
    if (vidi_conn_connect(router, &c, &err) != VIDI_OK) {
        fprintf(stderr, "vidi ask: %s\n", err.msg);
        goto done;
    }
    if (stats) {
        vidi_conn_event ev;
        if (vidi_conn_stats(c, &err) != VIDI_OK || vidi_conn_next(c, (int)(timeout_s * 1000), &ev, &err) != VIDI_OK) {
            fprintf(stderr, "vidi ask: %s\n", err.msg);
        } else {
            for (int i = 0; i < ev.n_stats; i++) printf("%s %llu\n", ev.stat_names[i], (unsigned long long)ev.stat_values[i]);
            vidi_conn_event_free(&ev);
            rc = 0;
        }
        vidi_conn_close(c);
        goto done;
    }
    rq.id = (uint64_t)getpid();
    rq.prompt = prompt;
    rq.system = system;
    rq.media = media;
    rq.n_media = n_media;
    if (vidi_conn_submit(c, &rq, &err) != VIDI_OK) {
        fprintf(stderr, "vidi ask: %s\n", err.msg);
        vidi_conn_close(c);
        goto done;
    }
    for (;;) {
        vidi_conn_event ev;
        if (vidi_conn_next(c, (int)(timeout_s * 1000), &ev, &err) != VIDI_OK) {
            fprintf(stderr, "\nvidi ask: %s\n", err.msg);
            break;
        }
        if (ev.type == VIDI_CONN_TOKEN && !quiet) {
            fwrite(ev.text, 1, ev.text_len, stdout);
            fflush(stdout);
        } else if (ev.type == VIDI_CONN_DONE) {
            if (!rq.stream && !quiet) fwrite(ev.text, 1, ev.text_len, stdout);
            if (!quiet) fputc('\n', stdout);
            if (quiet) printf("%s\n", ev.text);
            fprintf(stderr, "[%s, %d tokens, prompt %llu, cache hits %llu, %.3f s]\n", ev.finish, ev.n_tokens,
                    (unsigned long long)ev.prompt_tokens, (unsigned long long)ev.cache_hits, ev.total_s);
            rc = 0;
            vidi_conn_event_free(&ev);
            break;
        } else if (ev.type == VIDI_CONN_ERROR) {
            fprintf(stderr, "\nvidi ask: %s: %s\n", ev.code, ev.text);
            vidi_conn_event_free(&ev);
            break;
        }
        vidi_conn_event_free(&ev);
    }
    vidi_conn_close(c);
done:
    for (int i = 0; i < 16; i++) free(bufs[i]);
    return rc;
}

/* vidi role [--router EP] WORKER ROLES: a forced switch (PROTOCOL.md §5.6);
 * with --wait, until the router's STATS count it done. */
int vidi_cmd_role(int argc, char **argv) {
    char dir[512], front[600];
    s_run_dir(dir, sizeof dir);
    snprintf(front, sizeof front, "ipc://%s/front", dir);
    const char *router = front, *worker = NULL, *roles = NULL;
    int wait = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--router") && i + 1 < argc) router = argv[++i];
        else if (!strcmp(argv[i], "--wait")) wait = 1;
        else if (argv[i][0] != '-' && !worker) worker = argv[i];
        else if (argv[i][0] != '-' && !roles) roles = argv[i];
        else {
            worker = NULL;
            break;
        }
    }
    if (!worker || !roles) {
        fprintf(stderr, "usage: vidi role [--router EP] [--wait] WORKER ROLES\n"
                        "  ROLES: media, encode, prefill, decode joined by ',' or '+'. The router stops placing\n"
                        "  work on WORKER, waits until nothing needs it, and switches it; a stage is never left\n"
                        "  without a worker. --wait: until the switch is done (the router's STATS).\n");
        return 2;
    }
    vidi_err err = {0};
    vidi_conn *c = NULL;
    int rc = 1;
    uint64_t before = 0, aborted = 0;
    vidi_conn_event ev;
    if (vidi_conn_connect(router, &c, &err) != VIDI_OK) goto fail;
    if (wait) { /* the counters before, to see this switch end */
        if (vidi_conn_stats(c, &err) != VIDI_OK || vidi_conn_next(c, 10000, &ev, &err) != VIDI_OK) goto fail;
        before = vidi_conn_stat(&ev, "switches"), aborted = vidi_conn_stat(&ev, "switches_aborted");
        vidi_conn_event_free(&ev);
    }
    if (vidi_conn_role(c, worker, roles, &err) != VIDI_OK || vidi_conn_next(c, 10000, &ev, &err) != VIDI_OK) goto fail;
    if (ev.type != VIDI_CONN_ROLE) {
        fprintf(stderr, "vidi role: %s: %s\n", ev.code, ev.text);
        vidi_conn_event_free(&ev);
        goto done;
    }
    printf("%s\n", ev.text);
    vidi_conn_event_free(&ev);
    rc = 0;
    for (int64_t until = vidi_now_ms() + 120000; wait && rc == 0;) {
        if (vidi_now_ms() > until) {
            fprintf(stderr, "vidi role: the switch did not end within 120 s\n");
            rc = 1;
            break;
        }
        if (vidi_conn_stats(c, &err) != VIDI_OK || vidi_conn_next(c, 10000, &ev, &err) != VIDI_OK) goto fail;
        uint64_t done = vidi_conn_stat(&ev, "switches"), ab = vidi_conn_stat(&ev, "switches_aborted");
        uint64_t ms = vidi_conn_stat(&ev, "switch_ms_last"), role_ms = vidi_conn_stat(&ev, "switch_role_ms_last");
        vidi_conn_event_free(&ev);
        if (done > before) {
            printf("switched in %llu ms (ROLE to READY %llu ms)\n", (unsigned long long)ms, (unsigned long long)role_ms);
            break;
        }
        if (ab > aborted) {
            fprintf(stderr, "vidi role: the switch was abandoned (the router's log says why)\n");
            rc = 1;
            break;
        }
        usleep(100000);
    }
    goto done;
fail:
    fprintf(stderr, "vidi role: %s\n", err.msg);
done:
    vidi_conn_close(c);
    return rc;
}
