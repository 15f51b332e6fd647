/* core/json.h — small helpers over jansson shared by the JSON readers
 * (config.json, safetensors headers, tokenizer.json, manifests). */
#ifndef VIDI_CORE_JSON_H
#define VIDI_CORE_JSON_H

#include <jansson.h>

/* What a JSON value is, for messages: "an object", "an array", "a string",
 * "an integer", "a real number", "a boolean", "null". */
const char *vidi_json_kind(const json_t *j);

#endif
