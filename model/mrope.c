/* model/mrope.c — M-RoPE position ids by the original rule (see mrope.h). */
#include "model/mrope.h"

#include <stddef.h>

vidi_mrope_params vidi_mrope_params_from_config(const vidi_model_config *cfg) {
    vidi_mrope_params p = {
        .arch = cfg->arch,
        .image_token_id = cfg->image_token_id,
        .video_token_id = cfg->video_token_id,
        .spatial_merge_size = cfg->vision.spatial_merge_size,
        .tokens_per_second = cfg->vision.tokens_per_second,
    };
    return p;
}

int64_t vidi_mrope_item_tokens(const vidi_mrope_params *p, const vidi_mrope_item *item) {
    int m = p->spatial_merge_size;
    int64_t t = item->grid[0], h = item->grid[1], w = item->grid[2];
    if (m <= 0 || t <= 0 || h <= 0 || w <= 0 || h % m || w % m) return -1;
    return t * (h / m) * (w / m);
}

/* Temporal index of grid step k (see mrope.h for the fp32 evaluation order). */
static int64_t mrope_time_index(const vidi_mrope_params *p, const vidi_mrope_item *item, int64_t k) {
    if (p->arch != VIDI_ARCH_QWEN2_5_VL) return k;
    if (item->kind != VIDI_MEDIA_VIDEO) return 0;
    float scaled = (float)k * item->second_per_grid_t;
    scaled = scaled * p->tokens_per_second;
    return (int64_t)scaled;
}

static const char *mrope_kind_name(vidi_media_kind k) {
    return k == VIDI_MEDIA_VIDEO ? "video" : "image";
}

vidi_status vidi_mrope_positions(const vidi_mrope_params *p, const int32_t *ids, int64_t n,
                                 const vidi_mrope_item *items, int n_items, int32_t *pos,
                                 int64_t *rope_delta, vidi_err *err) {
    if (n < 0 || (n > 0 && (!ids || !pos)) || n_items < 0 || (n_items > 0 && !items))
        return vidi_err_set(err, VIDI_ERR_INVALID, "mrope: bad arguments (n %lld, %d items)",
                            (long long)n, n_items);
    if (p->arch == VIDI_ARCH_QWEN2_5_VL) {
        for (int i = 0; i < n_items; i++) {
            float s = items[i].second_per_grid_t;
            if (items[i].kind == VIDI_MEDIA_VIDEO && !(s >= 0.0f && s < 1e6f))
                return vidi_err_set(err, VIDI_ERR_INVALID,
                                    "mrope: video item %d: second_per_grid_t %g is not a "
                                    "non-negative number of seconds", i, (double)s);
        }
    }

    int64_t next = 0;   /* position of the next text token: previous max + 1 */
    int item = 0;
    int64_t i = 0;
    while (i < n) {
        int32_t id = ids[i];
        int is_image = id == p->image_token_id, is_video = id == p->video_token_id;
        if (!is_image && !is_video) {
            if (next > INT32_MAX)
                return vidi_err_set(err, VIDI_ERR_RANGE, "mrope: position %lld of token %lld "
                                    "does not fit in int32", (long long)next, (long long)i);
            pos[i * 3 + 0] = pos[i * 3 + 1] = pos[i * 3 + 2] = (int32_t)next;
            next++;
            i++;
            continue;
        }
        vidi_media_kind kind = is_video ? VIDI_MEDIA_VIDEO : VIDI_MEDIA_IMAGE;
        if (item >= n_items)
            return vidi_err_set(err, VIDI_ERR_INVALID,
                                "mrope: %s pad token at index %lld but all %d media items are "
                                "already placed (more pad runs than media items)",
                                mrope_kind_name(kind), (long long)i, n_items);
        const vidi_mrope_item *it = &items[item];
        if (it->kind != kind)
            return vidi_err_set(err, VIDI_ERR_INVALID,
                                "mrope: media item %d is a %s but the pad run at token %lld is "
                                "made of %s pads (items must follow the prompt's order)",
                                item, mrope_kind_name(it->kind), (long long)i,
                                mrope_kind_name(kind));
        int64_t count = vidi_mrope_item_tokens(p, it);
        if (count < 0)
            return vidi_err_set(err, VIDI_ERR_INVALID,
                                "mrope: media item %d has grid (%d, %d, %d): sides must be "
                                "positive and h, w multiples of the merge size %d",
                                item, it->grid[0], it->grid[1], it->grid[2],
                                p->spatial_merge_size);
        int64_t run = 0;
        while (i + run < n && ids[i + run] == id) run++;
        if (run < count || (run > count && (item + 1 >= n_items || items[item + 1].kind != kind)))
            return vidi_err_set(err, VIDI_ERR_INVALID,
                                "mrope: media item %d (%s, grid %d,%d,%d) needs %lld pad tokens "
                                "but the run at token %lld has %lld",
                                item, mrope_kind_name(kind), it->grid[0], it->grid[1],
                                it->grid[2], (long long)count, (long long)i, (long long)run);

        int m = p->spatial_merge_size;
        int64_t gt = it->grid[0], gh = it->grid[1] / m, gw = it->grid[2] / m;
        int64_t s = next, maxp = next;
        int64_t j = i;
        for (int64_t k = 0; k < gt; k++) {
            int64_t tp = s + mrope_time_index(p, it, k);
            if (tp > maxp) maxp = tp;
            for (int64_t r = 0; r < gh; r++) {
                for (int64_t c = 0; c < gw; c++, j++) {
                    int64_t hp = s + r, wp = s + c;
                    if (tp > INT32_MAX || hp > INT32_MAX || wp > INT32_MAX)
                        return vidi_err_set(err, VIDI_ERR_RANGE, "mrope: positions of media "
                                            "item %d do not fit in int32", item);
                    pos[j * 3 + 0] = (int32_t)tp;
                    pos[j * 3 + 1] = (int32_t)hp;
                    pos[j * 3 + 2] = (int32_t)wp;
                }
            }
        }
        if (s + gh - 1 > maxp) maxp = s + gh - 1;
        if (s + gw - 1 > maxp) maxp = s + gw - 1;
        next = maxp + 1;
        i += count;
        item++;
    }
    if (item != n_items)
        return vidi_err_set(err, VIDI_ERR_INVALID,
                            "mrope: %d media items given but the prompt has pad runs for %d "
                            "(one <|vision_start|><|image_pad|> or <|video_pad|> per item)",
                            n_items, item);
    if (rope_delta) *rope_delta = next - n;
    return VIDI_OK;
}

void vidi_mrope_decode_position(int64_t cache_pos, int64_t rope_delta, int32_t out[3]) {
    int64_t v = cache_pos + rope_delta;
    out[0] = out[1] = out[2] = (int32_t)v;
}
