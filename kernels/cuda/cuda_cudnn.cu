// kernels/cuda/cuda_cudnn.cu — fused scaled-dot-product attention through
// the cuDNN backend (graph) API, used by vidi_cuda_attention
// (cuda_attention.cu) ahead of its own kernel where cuDNN has a plan.
//
// The operation graph is the one cuDNN's fused flash-attention engines
// recognise: S = Q K^T (matmul, fp32), S *= scale (pointwise, scale by
// value), for causal S = row >= col ? S : lowest (gen-index x2, cmp_ge,
// binary_select), softmax as max / sub / exp / sum / div (with or without
// the log-sum-exp stats as an output: the graph without them is tried
// first), O = P V (matmul). Tensors are BHSD views of vidi's [T, H, D]
// rows (stride_S = H * D, stride_H = D), so nothing is copied; a batch is
// b sequences of one length laid end to end. K^T is K with its last two
// strides swapped; GQA is K / V with fewer heads (matmul broadcast).
//
// Plans are built once per shape (heuristics mode A, the first engine
// config that finalises) and cached, failures too, so an unsupported shape
// costs one attempt. The path is on unless VIDI_CUDNN=0 is in the environment
// (measured on an H100: causal D128 plans build and run at 549-677 TFLOP/s;
// the gpu tests pass with it); VIDI_CUDNN_DEBUG=1 reports plan builds on
// stderr.
#include "kernels/cuda/cuda_backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef VIDI_HAVE_CUDNN

#include <cudnn_graph.h>
#include <float.h>
#include <pthread.h>

struct vidi_cudnn_plan {
    vidi_cudnn_sdpa key;
    int device;
    int ok;              // 1: plan built; 0: cuDNN has none for this shape
    int with_stats;      // the graph that finalised has a stats output
    cudnnHandle_t handle;
    cudnnBackendDescriptor_t plan;
    size_t ws_bytes;     // cuDNN's workspace
    size_t stats_bytes;  // stats tensor (aligned), ahead of the workspace
};

namespace {

enum : int64_t { kQ = 1, kK, kV, kO, kStats, kScale, kNegInf, kS0, kS1, kS2, kRow, kCol, kMask, kS3, kMax, kSub,
                 kExp, kSum, kLog, kP };

constexpr int kMaxPlans = 128;
constexpr int kMaxDevices = 16;

pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
vidi_cudnn_plan g_plans[kMaxPlans];
int g_n_plans = 0;
cudnnHandle_t g_handles[kMaxDevices];
int g_enabled = -1, g_debug = 0;

bool same_key(const vidi_cudnn_sdpa &a, const vidi_cudnn_sdpa &b) {
    return a.b == b.b && a.hq == b.hq && a.hkv == b.hkv && a.sq == b.sq && a.skv == b.skv && a.d == b.d &&
           a.causal == b.causal;
}

// Descriptors made while building one graph, destroyed together.
struct Pool {
    cudnnBackendDescriptor_t d[64];
    int n = 0;
    bool failed = false;
    ~Pool() {
        for (int i = n - 1; i >= 0; i--) cudnnBackendDestroyDescriptor(d[i]);
    }
    cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t t) {
        if (failed || n == 64) {
            failed = true;
            return NULL;
        }
        cudnnBackendDescriptor_t x = NULL;
        if (cudnnBackendCreateDescriptor(t, &x) != CUDNN_STATUS_SUCCESS) {
            failed = true;
            return NULL;
        }
        d[n++] = x;
        return x;
    }
    void set(cudnnBackendDescriptor_t x, cudnnBackendAttributeName_t a, cudnnBackendAttributeType_t t, int64_t n,
             const void *v) {
        if (failed) return;
        if (cudnnBackendSetAttribute(x, a, t, n, v) != CUDNN_STATUS_SUCCESS) failed = true;
    }
    void fin(cudnnBackendDescriptor_t x) {
        if (failed) return;
        if (cudnnBackendFinalize(x) != CUDNN_STATUS_SUCCESS) failed = true;
    }
    cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t dt, const int64_t *dims, const int64_t *strides,
                                    bool virt, bool by_value = false) {
        cudnnBackendDescriptor_t x = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
        const int64_t align = 16;
        set(x, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
        set(x, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims);
        set(x, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides);
        set(x, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
        set(x, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
        set(x, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &virt);
        if (by_value) set(x, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &by_value);
        fin(x);
        return x;
    }
    // Pointwise op y = mode(x[, b[, t]]); axis >= 0 for GEN_INDEX.
    cudnnBackendDescriptor_t pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t prec, cudnnBackendDescriptor_t x,
                                       cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t,
                                       cudnnBackendDescriptor_t y, int64_t axis = -1) {
        cudnnBackendDescriptor_t pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
        set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
        set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec);
        if (axis >= 0) set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
        fin(pw);
        cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
        set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw);
        set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
        if (b) set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
        if (t) set(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t);
        set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
        fin(op);
        return op;
    }
    cudnnBackendDescriptor_t reduction(cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x,
                                       cudnnBackendDescriptor_t y) {
        cudnnBackendDescriptor_t r = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
        const cudnnDataType_t f = CUDNN_DATA_FLOAT;
        set(r, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode);
        set(r, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f);
        fin(r);
        cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
        set(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &r);
        set(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
        set(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
        fin(op);
        return op;
    }
    cudnnBackendDescriptor_t matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b,
                                    cudnnBackendDescriptor_t c) {
        cudnnBackendDescriptor_t m = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
        const cudnnDataType_t f = CUDNN_DATA_FLOAT;
        set(m, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f);
        fin(m);
        cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
        set(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
        set(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
        set(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c);
        set(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &m);
        fin(op);
        return op;
    }
};

// Builds the operation graph for s and the first execution plan that
// finalises. The plan descriptor outlives the pool (created separately).
bool build_plan(cudnnHandle_t h, const vidi_cudnn_sdpa &s, bool with_stats, cudnnBackendHeurMode_t mode,
                cudnnBackendDescriptor_t *plan_out, size_t *ws_out) {
    Pool P;
    const int64_t B = s.b, Hq = s.hq, Hk = s.hkv, Sq = s.sq, Sk = s.skv, D = s.d;
    const cudnnDataType_t bf = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT, i32 = CUDNN_DATA_INT32,
                          bl = CUDNN_DATA_BOOLEAN;
    const int64_t q_dims[4] = {B, Hq, Sq, D}, q_str[4] = {Sq * Hq * D, D, Hq * D, 1};
    const int64_t k_dims[4] = {B, Hk, Sk, D}, k_str[4] = {Sk * Hk * D, D, Hk * D, 1};
    const int64_t kt_dims[4] = {B, Hk, D, Sk}, kt_str[4] = {Sk * Hk * D, D, 1, Hk * D};
    const int64_t s_dims[4] = {B, Hq, Sq, Sk}, s_str[4] = {Hq * Sq * Sk, Sq * Sk, Sk, 1};
    const int64_t r_dims[4] = {B, Hq, Sq, 1}, r_str[4] = {Hq * Sq, Sq, 1, 1};
    const int64_t one[4] = {1, 1, 1, 1};

    cudnnBackendDescriptor_t tQ = P.tensor(kQ, bf, q_dims, q_str, false);
    cudnnBackendDescriptor_t tKt = P.tensor(kK, bf, kt_dims, kt_str, false);
    cudnnBackendDescriptor_t tV = P.tensor(kV, bf, k_dims, k_str, false);
    cudnnBackendDescriptor_t tO = P.tensor(kO, bf, q_dims, q_str, false);
    cudnnBackendDescriptor_t tScale = P.tensor(kScale, f32, one, one, false, true);
    cudnnBackendDescriptor_t tS0 = P.tensor(kS0, f32, s_dims, s_str, true);
    cudnnBackendDescriptor_t tS1 = P.tensor(kS1, f32, s_dims, s_str, true);

    cudnnBackendDescriptor_t ops[24];
    int n_ops = 0;
    ops[n_ops++] = P.matmul(tQ, tKt, tS0);
    ops[n_ops++] = P.pointwise(CUDNN_POINTWISE_MUL, f32, tS0, tScale, NULL, tS1);
    cudnnBackendDescriptor_t tSm = tS1;
    if (s.causal) {
        cudnnBackendDescriptor_t tRow = P.tensor(kRow, i32, s_dims, s_str, true);
        cudnnBackendDescriptor_t tCol = P.tensor(kCol, i32, s_dims, s_str, true);
        cudnnBackendDescriptor_t tMask = P.tensor(kMask, bl, s_dims, s_str, true);
        cudnnBackendDescriptor_t tNeg = P.tensor(kNegInf, f32, one, one, false, true);
        cudnnBackendDescriptor_t tS2 = P.tensor(kS2, f32, s_dims, s_str, true);
        ops[n_ops++] = P.pointwise(CUDNN_POINTWISE_GEN_INDEX, i32, tS1, NULL, NULL, tRow, 2);
        ops[n_ops++] = P.pointwise(CUDNN_POINTWISE_GEN_INDEX, i32, tS1, NULL, NULL, tCol, 3);
        ops[n_ops++] = P.pointwise(CUDNN_POINTWISE_CMP_GE, bl, tRow, tCol, NULL, tMask);
        ops[n_ops++] = P.pointwise(CUDNN_POINTWISE_BINARY_SELECT, f32, tS1, tNeg, tMask, tS2);
        tSm = tS2;
    }
    cudnnBackendDescriptor_t tMax = P.tensor(kMax, f32, r_dims, r_str, true);
    cudnnBackendDescriptor_t tSub = P.tensor(kSub, f32, s_dims, s_str, true);
    cudnnBackendDescriptor_t tExp = P.tensor(kExp, f32, s_dims, s_str, true);
    cudnnBackendDescriptor_t tSum = P.tensor(kSum, f32, r_dims, r_str, true);
    // P is bf16 like V: the fused engines want one dtype on both matmul inputs
    // (an H100 run with an fp32 P got "A and B need to have the same datatype").
    cudnnBackendDescriptor_t tP = P.tensor(kP, bf, s_dims, s_str, true);
    ops[n_ops++] = P.reduction(CUDNN_REDUCE_TENSOR_MAX, tSm, tMax);
    ops[n_ops++] = P.pointwise(CUDNN_POINTWISE_SUB, f32, tSm, tMax, NULL, tSub);
    ops[n_ops++] = P.pointwise(CUDNN_POINTWISE_EXP, f32, tSub, NULL, NULL, tExp);
    ops[n_ops++] = P.reduction(CUDNN_REDUCE_TENSOR_ADD, tExp, tSum);
    if (with_stats) {
        cudnnBackendDescriptor_t tLog = P.tensor(kLog, f32, r_dims, r_str, true);
        cudnnBackendDescriptor_t tStats = P.tensor(kStats, f32, r_dims, r_str, false);
        ops[n_ops++] = P.pointwise(CUDNN_POINTWISE_LOG, f32, tSum, NULL, NULL, tLog);
        ops[n_ops++] = P.pointwise(CUDNN_POINTWISE_ADD, f32, tMax, tLog, NULL, tStats);
    }
    ops[n_ops++] = P.pointwise(CUDNN_POINTWISE_DIV, f32, tExp, tSum, NULL, tP);
    ops[n_ops++] = P.matmul(tP, tV, tO);
    (void)kS3;
    if (P.failed) {
        if (g_debug) {
            char msg[512] = "";
            cudnnGetLastErrorString(msg, sizeof msg);
            fprintf(stderr, "vidi cudnn: a node did not finalise: %s\n", msg);
        }
        return false;
    }

    cudnnBackendDescriptor_t graph = P.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    P.set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
    P.set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n_ops, ops);
    P.fin(graph);
    if (P.failed) {
        if (g_debug) fprintf(stderr, "vidi cudnn: operation graph did not finalise\n");
        return false;
    }

    cudnnBackendDescriptor_t heur = P.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    P.set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
    P.set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    P.fin(heur);
    if (P.failed) {
        if (g_debug) fprintf(stderr, "vidi cudnn: heuristics did not finalise\n");
        return false;
    }
    int64_t n_cfg = 0;
    if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &n_cfg,
                                 NULL) != CUDNN_STATUS_SUCCESS ||
        n_cfg <= 0) {
        if (g_debug) fprintf(stderr, "vidi cudnn: no engine configs (%lld)\n", (long long)n_cfg);
        return false;
    }
    if (n_cfg > 32) n_cfg = 32;
    cudnnBackendDescriptor_t cfgs[32];
    for (int64_t i = 0; i < n_cfg; i++) cfgs[i] = P.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    if (P.failed) return false;
    int64_t got = 0;
    if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n_cfg, &got,
                                 cfgs) != CUDNN_STATUS_SUCCESS)
        return false;
    if (g_debug) fprintf(stderr, "vidi cudnn: %lld engine configs\n", (long long)got);
    for (int64_t i = 0; i < got && i < n_cfg; i++) {
        cudnnBackendDescriptor_t plan = NULL;
        if (cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan) != CUDNN_STATUS_SUCCESS)
            return false;
        bool ok = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h) ==
                      CUDNN_STATUS_SUCCESS &&
                  cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                           CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]) == CUDNN_STATUS_SUCCESS &&
                  cudnnBackendFinalize(plan) == CUDNN_STATUS_SUCCESS;
        int64_t ws = 0, n = 0;
        if (ok)
            ok = cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                          &ws) == CUDNN_STATUS_SUCCESS &&
                 ws >= 0;
        if (ok) {
            *plan_out = plan;
            *ws_out = (size_t)ws;
            if (g_debug) fprintf(stderr, "vidi cudnn: engine config %lld of %lld, workspace %lld\n", (long long)i,
                                 (long long)got, (long long)ws);
            return true;
        }
        if (g_debug) {
            char msg[512] = "";
            cudnnGetLastErrorString(msg, sizeof msg);
            fprintf(stderr, "vidi cudnn: engine config %lld failed: %s\n", (long long)i, msg);
        }
        cudnnBackendDestroyDescriptor(plan);
    }
    return false;
}

}  // namespace

extern "C" vidi_cudnn_plan *vidi_cudnn_sdpa_plan(const vidi_cudnn_sdpa *s, size_t *workspace) {
    if (g_enabled < 0) {
        const char *e = getenv("VIDI_CUDNN"), *d = getenv("VIDI_CUDNN_DEBUG");
        g_debug = d && *d && strcmp(d, "0") != 0;
        g_enabled = !(e && strcmp(e, "0") == 0); /* on unless VIDI_CUDNN=0 */
    }
    if (!g_enabled) return NULL;
    if (s->d % 8 != 0 || s->d > 128 || s->b <= 0 || s->sq <= 0 || s->skv <= 0 || s->hq % s->hkv != 0) return NULL;
    if (s->causal && s->sq != s->skv) return NULL;  // top-left mask only; ours is bottom-right
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) return NULL;

    vidi_cudnn_plan *out = NULL;
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_n_plans; i++)
        if (g_plans[i].device == dev && same_key(g_plans[i].key, *s)) {
            out = &g_plans[i];
            break;
        }
    if (!out && g_n_plans < kMaxPlans) {
        if (!g_handles[dev] && cudnnCreate(&g_handles[dev]) != CUDNN_STATUS_SUCCESS) g_handles[dev] = NULL;
        vidi_cudnn_plan *p = &g_plans[g_n_plans];
        memset(p, 0, sizeof *p);
        p->key = *s;
        p->device = dev;
        p->handle = g_handles[dev];
        if (p->handle) {
            // Without stats first (less memory), heuristics mode A, then fallback.
            for (int t = 0; t < 4 && !p->ok; t++) {
                const int stats = t & 1;
                const cudnnBackendHeurMode_t mode = t < 2 ? CUDNN_HEUR_MODE_A : CUDNN_HEUR_MODE_FALLBACK;
                if (build_plan(p->handle, *s, stats != 0, mode, &p->plan, &p->ws_bytes)) {
                    p->ok = 1;
                    p->with_stats = stats;
                }
                if (g_debug) fprintf(stderr, "vidi cudnn: try stats %d heur %d: %s\n", stats, (int)mode, p->ok ? "ok" : "failed");
            }
        }
        if (p->with_stats) p->stats_bytes = ((size_t)(s->b * s->hq * s->sq) * sizeof(float) + 255) & ~(size_t)255;
        if (g_debug)
            fprintf(stderr, "vidi cudnn: b %lld hq %lld hkv %lld sq %lld skv %lld d %lld causal %d: %s%s\n",
                    (long long)s->b, (long long)s->hq, (long long)s->hkv, (long long)s->sq, (long long)s->skv,
                    (long long)s->d, s->causal, p->ok ? "plan" : "no plan", p->with_stats ? " (with stats)" : "");
        g_n_plans++;
        out = p;
    }
    pthread_mutex_unlock(&g_mu);
    if (!out || !out->ok) return NULL;
    *workspace = out->stats_bytes + out->ws_bytes;
    return out;
}

extern "C" vidi_status vidi_cudnn_sdpa_run(vidi_cudnn_plan *p, cudaStream_t st, const void *q, const void *k,
                                           const void *v, void *o, float scale, void *workspace, vidi_err *err) {
    float neg = -FLT_MAX;
    int64_t uids[7] = {kQ, kK, kV, kO, kScale, 0, 0};
    void *ptrs[7] = {(void *)q, (void *)k, (void *)v, o, &scale, NULL, NULL};
    int n = 5;
    if (p->key.causal) uids[n] = kNegInf, ptrs[n++] = &neg;
    if (p->with_stats) uids[n] = kStats, ptrs[n++] = workspace;
    void *ws = p->ws_bytes ? (char *)workspace + p->stats_bytes : NULL;
    cudnnBackendDescriptor_t vp = NULL;
    cudnnStatus_t e = cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp);
    if (e == CUDNN_STATUS_SUCCESS)
        e = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids);
    if (e == CUDNN_STATUS_SUCCESS)
        e = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs);
    if (e == CUDNN_STATUS_SUCCESS)
        e = cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws);
    if (e == CUDNN_STATUS_SUCCESS) e = cudnnBackendFinalize(vp);
    if (e == CUDNN_STATUS_SUCCESS) {
        pthread_mutex_lock(&g_mu);  // the handle's stream is shared state
        e = cudnnSetStream(p->handle, st);
        if (e == CUDNN_STATUS_SUCCESS) e = cudnnBackendExecute(p->handle, p->plan, vp);
        pthread_mutex_unlock(&g_mu);
    }
    if (vp) cudnnBackendDestroyDescriptor(vp);
    if (e != CUDNN_STATUS_SUCCESS)
        return vidi_err_set(err, VIDI_ERR_INTERNAL, "attention: cuDNN: %s", cudnnGetErrorString(e));
    return VIDI_OK;
}

#else  // no cuDNN at build time: never a plan

extern "C" vidi_cudnn_plan *vidi_cudnn_sdpa_plan(const vidi_cudnn_sdpa *s, size_t *workspace) {
    (void)s;
    (void)workspace;
    return NULL;
}

extern "C" vidi_status vidi_cudnn_sdpa_run(vidi_cudnn_plan *p, cudaStream_t st, const void *q, const void *k,
                                           const void *v, void *o, float scale, void *workspace, vidi_err *err) {
    (void)p, (void)st, (void)q, (void)k, (void)v, (void)o, (void)scale, (void)workspace;
    return vidi_err_set(err, VIDI_ERR_UNSUPPORTED, "attention: built without cuDNN");
}

#endif
