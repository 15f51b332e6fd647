/* model/tokenizer.h — tokenizer.json byte-level BPE (Qwen2 family) and the
 * Qwen2-VL chat template.
 *
 * Encoding: added/special tokens are split out first (longest match first),
 * the text between them is NFC-normalised (utf8proc), split by the Qwen2
 * pre-tokenizer regex (PCRE2, UTF + UCP), mapped to the GPT-2 byte alphabet
 * and merged by BPE rank. Decoding maps ids back to bytes; the streaming
 * decoder holds back an incomplete UTF-8 sequence until it completes.
 */
#ifndef VIDI_MODEL_TOKENIZER_H
#define VIDI_MODEL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct vidi_tokenizer vidi_tokenizer;

/* Load <path> (a tokenizer.json). Freed by vidi_tokenizer_free. Malformed
 * JSON, a missing model/vocab/merges, or an unsupported model type are
 * errors naming the file and the field. */
vidi_status vidi_tokenizer_load(const char *path, vidi_tokenizer **out, vidi_err *err);
void vidi_tokenizer_free(vidi_tokenizer *tok);

/* Encode `len` bytes of UTF-8 text (invalid UTF-8 is an error). On success
 * *ids is malloc'd (freed by the caller with free) and *n_ids set.
 * Special tokens written in the text are recognised as such. */
vidi_status vidi_tokenizer_encode(const vidi_tokenizer *tok, const char *text, size_t len,
                                  int32_t **ids, size_t *n_ids, vidi_err *err);

/* Decode ids to UTF-8 into a malloc'd NUL-terminated string (*out, freed by
 * the caller). skip_special drops special tokens. Ids out of range are an
 * error. Bytes that do not form valid UTF-8 become U+FFFD. */
vidi_status vidi_tokenizer_decode(const vidi_tokenizer *tok, const int32_t *ids, size_t n_ids,
                                  int skip_special, char **out, vidi_err *err);

/* Id of a token string (vocab or added token), or -1. */
int32_t vidi_tokenizer_token_id(const vidi_tokenizer *tok, const char *token);
/* Vocabulary size including added tokens (max id + 1). */
int32_t vidi_tokenizer_vocab_size(const vidi_tokenizer *tok);
/* 1 when id is a special token (one that decode drops with skip_special),
 * 0 otherwise, including for ids out of range. */
int vidi_tokenizer_is_special(const vidi_tokenizer *tok, int32_t id);

/* Streaming detokenizer: feed ids one at a time, get the text that became
 * complete (never a partial UTF-8 sequence). */
typedef struct vidi_detok {
    const vidi_tokenizer *tok;
    int skip_special;
    unsigned char pending[8]; /* bytes of an incomplete UTF-8 sequence */
    int n_pending;
} vidi_detok;

void vidi_detok_init(vidi_detok *d, const vidi_tokenizer *tok, int skip_special);
/* Appends the newly complete text (NUL-terminated) to buf (cap bytes); sets
 * *written to the bytes appended. Too small a buffer is VIDI_ERR_RANGE. The
 * text is written from buf[0] on each call (the caller appends it to its
 * stream); after VIDI_ERR_RANGE the state is unchanged and the same id can
 * be pushed again. A buffer of 3 * (token bytes + 3) + 1 always fits. */
vidi_status vidi_detok_push(vidi_detok *d, int32_t id, char *buf, size_t cap, size_t *written,
                            vidi_err *err);
/* Emit what is still held back (as U+FFFD) at the end of a stream. */
vidi_status vidi_detok_flush(vidi_detok *d, char *buf, size_t cap, size_t *written, vidi_err *err);

/* ---- chat template (Qwen2-VL) ---- */

typedef enum vidi_chat_part_kind {
    VIDI_CHAT_TEXT = 0,
    VIDI_CHAT_IMAGE = 1,
    VIDI_CHAT_VIDEO = 2,
} vidi_chat_part_kind;

typedef struct vidi_chat_part {
    vidi_chat_part_kind kind;
    const char *text;          /* VIDI_CHAT_TEXT only */
} vidi_chat_part;

typedef struct vidi_chat_message {
    const char *role;          /* "system", "user", "assistant" */
    const vidi_chat_part *parts;
    int n_parts;
} vidi_chat_message;

/* Render messages as the Qwen2-VL template does: a default system turn when
 * the first message is not a system message, <|im_start|>role\n ...
 * <|im_end|>\n per message, <|vision_start|><|image_pad|><|vision_end|> per
 * image, <|vision_start|><|video_pad|><|vision_end|> per video, and
 * <|im_start|>assistant\n when add_generation_prompt. *out is malloc'd. */
vidi_status vidi_chat_template_render(const vidi_chat_message *msgs, int n_msgs,
                                      int add_generation_prompt, char **out, vidi_err *err);
/* As vidi_chat_template_render; add_vision_id prefixes each image with
 * "Picture N: " and each video with "Video N: " (N counts from 1 over the
 * whole conversation), as the template's add_vision_id flag does. */
vidi_status vidi_chat_template_render_ex(const vidi_chat_message *msgs, int n_msgs,
                                         int add_generation_prompt, int add_vision_id, char **out,
                                         vidi_err *err);

#endif
