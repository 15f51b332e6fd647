/* model/chat_template.c — the Qwen2-VL / Qwen2.5-VL chat template, written
 * out in C.
 *
 * The Jinja template both model families ship renders, per message,
 *   <|im_start|>{role}\n{content}<|im_end|>\n
 * where content is the text parts and media placeholders concatenated with
 * nothing between them; it inserts a default system turn before the first
 * message when that message is not a system message, and ends with
 * <|im_start|>assistant\n when add_generation_prompt is set.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

#define CHAT_MAX_OUT ((size_t)64 << 20) /* the tokenizer's text limit */

static const char chat_default_system[] = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n";
static const char chat_image[] = "<|vision_start|><|image_pad|><|vision_end|>";
static const char chat_video[] = "<|vision_start|><|video_pad|><|vision_end|>";

typedef struct chat_buf {
    char *p;
    size_t n, cap;
} chat_buf;

static vidi_status chat_put(chat_buf *b, const char *s, size_t n, vidi_err *err)
{
    if (n > CHAT_MAX_OUT - b->n)
        return vidi_err_set(err, VIDI_ERR_RANGE, "chat template: the prompt exceeds %zu bytes", CHAT_MAX_OUT);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) return vidi_err_set(err, VIDI_ERR_NOMEM, "chat template: out of memory");
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return VIDI_OK;
}

static vidi_status chat_puts(chat_buf *b, const char *s, vidi_err *err)
{
    return chat_put(b, s, strlen(s), err);
}

/* "Picture 3: " / "Video 1: " */
static vidi_status chat_put_id(chat_buf *b, const char *what, int n, vidi_err *err)
{
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%s %d: ", what, n);
    return chat_put(b, tmp, (size_t)k, err);
}

vidi_status vidi_chat_template_render_ex(const vidi_chat_message *msgs, int n_msgs, int add_generation_prompt,
                                         int add_vision_id, char **out, vidi_err *err)
{
    vidi_status rc = VIDI_OK;
    chat_buf b = {0};
    int n_images = 0, n_videos = 0;

    VIDI_CHECK(out && n_msgs >= 0 && (msgs || n_msgs == 0), err, VIDI_ERR_INVALID,
               "chat template: out must not be NULL, and msgs must hold n_msgs >= 0 messages");
    *out = NULL;
    for (int i = 0; i < n_msgs; i++) {
        const vidi_chat_message *m = &msgs[i];
        VIDI_CHECK(m->role && m->role[0], err, VIDI_ERR_INVALID, "chat template: message %d has no role", i);
        VIDI_CHECK(m->n_parts >= 0 && (m->parts || m->n_parts == 0), err, VIDI_ERR_INVALID,
                   "chat template: message %d: parts must hold n_parts >= 0 parts", i);
        if (i == 0 && strcmp(m->role, "system") != 0) VIDI_TRY(chat_puts(&b, chat_default_system, err));
        VIDI_TRY(chat_puts(&b, "<|im_start|>", err));
        VIDI_TRY(chat_puts(&b, m->role, err));
        VIDI_TRY(chat_puts(&b, "\n", err));
        for (int j = 0; j < m->n_parts; j++) {
            const vidi_chat_part *p = &m->parts[j];
            switch (p->kind) {
            case VIDI_CHAT_TEXT:
                VIDI_CHECK(p->text, err, VIDI_ERR_INVALID, "chat template: message %d part %d: text is NULL", i, j);
                VIDI_TRY(chat_puts(&b, p->text, err));
                break;
            case VIDI_CHAT_IMAGE:
                n_images++;
                if (add_vision_id) VIDI_TRY(chat_put_id(&b, "Picture", n_images, err));
                VIDI_TRY(chat_puts(&b, chat_image, err));
                break;
            case VIDI_CHAT_VIDEO:
                n_videos++;
                if (add_vision_id) VIDI_TRY(chat_put_id(&b, "Video", n_videos, err));
                VIDI_TRY(chat_puts(&b, chat_video, err));
                break;
            default:
                VIDI_CHECK(0, err, VIDI_ERR_INVALID, "chat template: message %d part %d: unknown kind %d", i, j,
                           (int)p->kind);
            }
        }
        VIDI_TRY(chat_puts(&b, "<|im_end|>\n", err));
    }
    if (add_generation_prompt) VIDI_TRY(chat_puts(&b, "<|im_start|>assistant\n", err));
    if (!b.p) VIDI_TRY(chat_put(&b, "", 0, err)); /* an empty prompt is still a string */
    *out = b.p;
    return VIDI_OK;
fail:
    free(b.p);
    return rc;
}

vidi_status vidi_chat_template_render(const vidi_chat_message *msgs, int n_msgs, int add_generation_prompt,
                                      char **out, vidi_err *err)
{
    return vidi_chat_template_render_ex(msgs, n_msgs, add_generation_prompt, 0, out, err);
}
