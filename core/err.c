/* core/err.c — error values with messages (see err.h). */
#include "core/err.h"

#include <stdio.h>
#include <string.h>

const char *vidi_status_name(vidi_status st) {
    switch (st) {
    case VIDI_OK: return "ok";
    case VIDI_ERR_INVALID: return "invalid";
    case VIDI_ERR_NOMEM: return "out of memory";
    case VIDI_ERR_IO: return "io";
    case VIDI_ERR_FORMAT: return "format";
    case VIDI_ERR_UNSUPPORTED: return "unsupported";
    case VIDI_ERR_RANGE: return "range";
    case VIDI_ERR_NOTFOUND: return "not found";
    case VIDI_ERR_INTERNAL: return "internal";
    }
    return "unknown";
}

vidi_status vidi_err_set(vidi_err *e, vidi_status st, const char *fmt, ...) {
    if (!e) return st;
    e->status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return st;
}

void vidi_err_prefix(vidi_err *e, const char *fmt, ...) {
    if (!e) return;
    char ctx[VIDI_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    size_t n = strlen(ctx);
    if (n + 2 >= sizeof e->msg) n = sizeof e->msg - 3;
    size_t old = strnlen(e->msg, sizeof e->msg - 1);
    if (n + 2 + old >= sizeof e->msg) old = sizeof e->msg - 1 - n - 2;
    memmove(e->msg + n + 2, e->msg, old);
    memcpy(e->msg, ctx, n);
    e->msg[n] = ':';
    e->msg[n + 1] = ' ';
    e->msg[n + 2 + old] = '\0';
}

void vidi_err_clear(vidi_err *e) {
    if (!e) return;
    e->status = VIDI_OK;
    e->msg[0] = '\0';
}
