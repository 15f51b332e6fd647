/* core/err.h — errors as values.
 *
 * Library code never exits. A function that can fail returns a vidi_status
 * (VIDI_OK == 0, failures negative) and, when given a non-NULL vidi_err,
 * fills it with a message that says what was wrong and where. The caller
 * decides whether to print it, wrap it with more context, or recover.
 */
#ifndef VIDI_CORE_ERR_H
#define VIDI_CORE_ERR_H

#include <stdarg.h>

typedef enum vidi_status {
    VIDI_OK = 0,
    VIDI_ERR_INVALID = -1,     /* bad argument or input value */
    VIDI_ERR_NOMEM = -2,       /* allocation failed */
    VIDI_ERR_IO = -3,          /* open/read/write/mmap failed */
    VIDI_ERR_FORMAT = -4,      /* malformed file or message */
    VIDI_ERR_UNSUPPORTED = -5, /* valid but not supported (dtype, arch, ...) */
    VIDI_ERR_RANGE = -6,       /* a limit was exceeded */
    VIDI_ERR_NOTFOUND = -7,    /* missing file, tensor, key */
    VIDI_ERR_INTERNAL = -8,    /* broken invariant inside vidi */
} vidi_status;

#define VIDI_ERR_MSG_MAX 1024

typedef struct vidi_err {
    vidi_status status;
    char msg[VIDI_ERR_MSG_MAX];
} vidi_err;

/* Short stable name of a status ("invalid", "format", ...). */
const char *vidi_status_name(vidi_status st);

/* Fill *e (if non-NULL) with st and a printf-style message; returns st so
 * that `return vidi_err_set(e, VIDI_ERR_IO, "...")` reads naturally. */
vidi_status vidi_err_set(vidi_err *e, vidi_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepend context to an existing message: "ctx: old message". */
void vidi_err_prefix(vidi_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void vidi_err_clear(vidi_err *e);

/* Inside a function with `vidi_status rc` and a `fail:` label:
 * if cond is false, set the error and jump to fail. */
#define VIDI_CHECK(cond, e, st, ...)                                           \
    do {                                                                       \
        if (!(cond)) {                                                         \
            rc = vidi_err_set((e), (st), __VA_ARGS__);                         \
            goto fail;                                                         \
        }                                                                      \
    } while (0)

/* Propagate a failing status from a callee (which already filled the error). */
#define VIDI_TRY(expr)                                                         \
    do {                                                                       \
        rc = (expr);                                                           \
        if (rc != VIDI_OK) goto fail;                                          \
    } while (0)

#endif
