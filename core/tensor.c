/* core/tensor.c — dtype helpers and tensor views (see tensor.h). */
#include "core/tensor.h"

#include <math.h>
#include <string.h>

size_t vidi_dtype_size(vidi_dtype dt) {
    switch (dt) {
    case VIDI_DTYPE_F32: return 4;
    case VIDI_DTYPE_F16: return 2;
    case VIDI_DTYPE_BF16: return 2;
    case VIDI_DTYPE_I32: return 4;
    default: return 0;
    }
}

const char *vidi_dtype_name(vidi_dtype dt) {
    switch (dt) {
    case VIDI_DTYPE_F32: return "f32";
    case VIDI_DTYPE_F16: return "f16";
    case VIDI_DTYPE_BF16: return "bf16";
    case VIDI_DTYPE_I32: return "i32";
    default: return "?";
    }
}

vidi_tensor vidi_tensor_view(vidi_dtype dt, void *data, int ndim, const int64_t *shape) {
    vidi_tensor t;
    memset(&t, 0, sizeof t);
    t.dtype = dt;
    t.ndim = ndim < 0 ? 0 : (ndim > VIDI_MAX_DIMS ? VIDI_MAX_DIMS : ndim);
    for (int i = 0; i < t.ndim; i++) t.shape[i] = shape[i];
    t.data = data;
    return t;
}

vidi_tensor vidi_tensor_1d(vidi_dtype dt, void *data, int64_t n0) {
    return vidi_tensor_view(dt, data, 1, (int64_t[]){n0});
}
vidi_tensor vidi_tensor_2d(vidi_dtype dt, void *data, int64_t n0, int64_t n1) {
    return vidi_tensor_view(dt, data, 2, (int64_t[]){n0, n1});
}
vidi_tensor vidi_tensor_3d(vidi_dtype dt, void *data, int64_t n0, int64_t n1, int64_t n2) {
    return vidi_tensor_view(dt, data, 3, (int64_t[]){n0, n1, n2});
}

int64_t vidi_tensor_numel(const vidi_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t vidi_tensor_nbytes(const vidi_tensor *t) {
    return (size_t)vidi_tensor_numel(t) * vidi_dtype_size(t->dtype);
}

int64_t vidi_tensor_cols(const vidi_tensor *t) {
    return t->ndim ? t->shape[t->ndim - 1] : 1;
}

int64_t vidi_tensor_rows(const vidi_tensor *t) {
    int64_t r = 1; /* a product, so rows stay right when the last dimension is 0 */
    for (int i = 0; i < t->ndim - 1; i++) r *= t->shape[i];
    return r;
}

uint16_t vidi_f32_to_bf16(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)((v.u + rounding) >> 16);
}

float vidi_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    union { uint32_t u; float f; } v;
    if (exp == 0) {
        if (man == 0) {
            v.u = sign;
        } else { /* subnormal: value = man * 2^-24 */
            float f = ldexpf((float)man, -24);
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        v.u = sign | 0x7f800000u | (man << 13);
    } else {
        v.u = sign | ((exp + 112) << 23) | (man << 13);
    }
    return v.f;
}

uint16_t vidi_f32_to_f16(float f) {
    union { float f; uint32_t u; } v = {.f = f};
    uint32_t sign = (v.u >> 16) & 0x8000;
    uint32_t abs = v.u & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00);          /* NaN */
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);         /* overflow -> inf */
    if (abs < 0x38800000u) {                                          /* subnormal or zero */
        float a = fabsf(f);
        /* round to nearest even in units of 2^-24 */
        float q = a * 16777216.0f;
        uint32_t m = (uint32_t)nearbyintf(q);
        return (uint16_t)(sign | m);
    }
    uint32_t exp = ((abs >> 23) - 112) << 10;
    uint32_t man = (abs >> 13) & 0x3ff;
    uint32_t rest = abs & 0x1fff;
    uint32_t h = exp | man;
    if (rest > 0x1000 || (rest == 0x1000 && (man & 1))) h++;
    return (uint16_t)(sign | h);
}

void vidi_convert_to_f32(vidi_dtype src_dt, const void *src, float *dst, size_t n) {
    switch (src_dt) {
    case VIDI_DTYPE_F32: memmove(dst, src, n * sizeof(float)); break;
    case VIDI_DTYPE_BF16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = vidi_bf16_to_f32(s[i]);
        break;
    }
    case VIDI_DTYPE_F16: {
        const uint16_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = vidi_f16_to_f32(s[i]);
        break;
    }
    case VIDI_DTYPE_I32: {
        const int32_t *s = src;
        for (size_t i = 0; i < n; i++) dst[i] = (float)s[i];
        break;
    }
    default: break;
    }
}

void vidi_convert_from_f32(vidi_dtype dst_dt, const float *src, void *dst, size_t n) {
    switch (dst_dt) {
    case VIDI_DTYPE_F32: memmove(dst, src, n * sizeof(float)); break;
    case VIDI_DTYPE_BF16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = vidi_f32_to_bf16(src[i]);
        break;
    }
    case VIDI_DTYPE_F16: {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = vidi_f32_to_f16(src[i]);
        break;
    }
    default: break;
    }
}
