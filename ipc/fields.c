/* ipc/fields.c — the shared sampling fields (fields.h). */
#include "ipc/fields.h"

#include <string.h>

#include "ipc/msg.h"

vidi_status vidi_wire_sampling_parse(const msgpack_object *map, vidi_wire_sampling *s, vidi_err *err) {
    memset(s, 0, sizeof *s);
    vidi_status rc;
    const msgpack_object *ids;
    size_t n_ids;
    if ((rc = vidi_mp_u64(map, "max_tokens", 0, 128, 1, VIDI_WIRE_MAX_TOKENS, &s->max_tokens, err)) ||
        (rc = vidi_mp_f64(map, "temperature", 0, 0.0, 0.0, 100.0, &s->temperature, err)) ||
        (rc = vidi_mp_f64(map, "top_p", 0, 1.0, 1e-9, 1.0, &s->top_p, err)) ||
        (rc = vidi_mp_u64(map, "top_k", 0, 0, 0, 1 << 20, &s->top_k, err)) ||
        (rc = vidi_mp_array(map, "stop_ids", 0, VIDI_WIRE_MAX_STOP_IDS, &ids, &n_ids, err)))
        return rc;
    s->has_seed = vidi_mp_get(map, "seed") != NULL;
    if ((rc = vidi_mp_u64(map, "seed", 0, 0, 0, UINT64_MAX, &s->seed, err))) return rc;
    for (size_t i = 0; i < n_ids; i++) {
        if (ids[i].type != MSGPACK_OBJECT_POSITIVE_INTEGER || ids[i].via.u64 > INT32_MAX)
            return vidi_err_set(err, VIDI_ERR_FORMAT, "field 'stop_ids': item %zu is not a token id", i);
        s->stop_ids[s->n_stop_ids++] = (int32_t)ids[i].via.u64;
    }
    return VIDI_OK;
}

int vidi_wire_sampling_fields(const vidi_wire_sampling *s) { return 5 + (s->has_seed ? 1 : 0); }

void vidi_wire_sampling_pack(msgpack_packer *pk, const vidi_wire_sampling *s) {
    vidi_mp_kv_u64(pk, "max_tokens", s->max_tokens);
    vidi_mp_kv_f64(pk, "temperature", s->temperature);
    vidi_mp_kv_f64(pk, "top_p", s->top_p);
    vidi_mp_kv_u64(pk, "top_k", s->top_k);
    vidi_mp_pack_cstr(pk, "stop_ids");
    msgpack_pack_array(pk, (size_t)s->n_stop_ids);
    for (int i = 0; i < s->n_stop_ids; i++) msgpack_pack_uint64(pk, (uint64_t)s->stop_ids[i]);
    if (s->has_seed) {
        vidi_mp_kv_u64(pk, "seed", s->seed);
    }
}
