/* core/log.c — levelled logging (see log.h). */
#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_level = -1;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static int level_from_env(void) {
    const char *s = getenv("VIDI_LOG");
    if (!s) return VIDI_LOG_WARN;
    if (!strcmp(s, "error")) return VIDI_LOG_ERROR;
    if (!strcmp(s, "info")) return VIDI_LOG_INFO;
    if (!strcmp(s, "debug")) return VIDI_LOG_DEBUG;
    return VIDI_LOG_WARN;
}

void vidi_log_set_level(vidi_log_level level) { g_level = (int)level; }

vidi_log_level vidi_log_get_level(void) {
    if (g_level < 0) g_level = level_from_env();
    return (vidi_log_level)g_level;
}

void vidi_log(vidi_log_level level, const char *fmt, ...) {
    if ((int)level > (int)vidi_log_get_level()) return;
    static const char *names[] = {"error", "warn", "info", "debug"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    pthread_mutex_lock(&g_lock);
    fprintf(stderr, "%02d:%02d:%02d.%03ld vidi %s: ", tm.tm_hour, tm.tm_min,
            tm.tm_sec, ts.tv_nsec / 1000000, names[level]);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&g_lock);
}
