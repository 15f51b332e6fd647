/* core/log.h — levelled logging to stderr.
 * The level comes from VIDI_LOG (error|warn|info|debug), default warn. */
#ifndef VIDI_CORE_LOG_H
#define VIDI_CORE_LOG_H

typedef enum vidi_log_level {
    VIDI_LOG_ERROR = 0,
    VIDI_LOG_WARN = 1,
    VIDI_LOG_INFO = 2,
    VIDI_LOG_DEBUG = 3,
} vidi_log_level;

void vidi_log_set_level(vidi_log_level level);
vidi_log_level vidi_log_get_level(void);
void vidi_log(vidi_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define VIDI_LOGE(...) vidi_log(VIDI_LOG_ERROR, __VA_ARGS__)
#define VIDI_LOGW(...) vidi_log(VIDI_LOG_WARN, __VA_ARGS__)
#define VIDI_LOGI(...) vidi_log(VIDI_LOG_INFO, __VA_ARGS__)
#define VIDI_LOGD(...) vidi_log(VIDI_LOG_DEBUG, __VA_ARGS__)

#endif
