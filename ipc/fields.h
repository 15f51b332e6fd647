/* ipc/fields.h — header fields more than one command shares (PROTOCOL.md
 * §5): the sampling fields of REQUEST, WORK "prefill" and WORK "decode",
 * packed and checked in one place. */
#ifndef VIDI_IPC_FIELDS_H
#define VIDI_IPC_FIELDS_H

#include <stdint.h>

#include <msgpack.h>

#include "core/err.h"

#define VIDI_WIRE_MAX_STOP_IDS 16
#define VIDI_WIRE_MAX_TOKENS 32768

typedef struct vidi_wire_sampling {
    uint64_t max_tokens;     /* 1 .. VIDI_WIRE_MAX_TOKENS, default 128 */
    double temperature;      /* 0 .. 100, default 0 (greedy) */
    double top_p;            /* (0, 1], default 1 */
    uint64_t top_k;          /* 0 (off) .. 1 << 20 */
    int has_seed;
    uint64_t seed;
    int n_stop_ids;
    int32_t stop_ids[VIDI_WIRE_MAX_STOP_IDS];
} vidi_wire_sampling;

/* Defaults, then every field present in `map` checked (errors name the field). */
vidi_status vidi_wire_sampling_parse(const msgpack_object *map, vidi_wire_sampling *s, vidi_err *err);
/* The number of map entries vidi_wire_sampling_pack writes, and the packing. */
int vidi_wire_sampling_fields(const vidi_wire_sampling *s);
void vidi_wire_sampling_pack(msgpack_packer *pk, const vidi_wire_sampling *s);

#endif
