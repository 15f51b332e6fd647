// kernels/cuda/cuda_graph.cu — CUDA graphs for the op table (ops.h
// graph_begin / graph_end / graph_launch / graph_free).
//
// Recording is stream capture of the backend's one stream in thread-local
// mode (other threads' CUDA calls do not invalidate it); graph_end
// instantiates the captured graph and returns the executable graph, and
// graph_launch replays it on the same stream. Ops that allocate
// stream-ordered memory while recording become allocation nodes of the
// graph; ops that wait or upload from pageable host memory must not be
// recorded (ops.h).
#include "kernels/cuda/cuda_backend.h"

extern "C" vidi_status vidi_cuda_graph_begin(vidi_backend *be, vidi_err *err) {
    cudaStream_t s = vidi_cuda_stream(be);
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    vidi_status rc = vidi_cuda_check(cudaStreamIsCapturing(s, &cs), "graph_begin", err);
    if (rc != VIDI_OK) return rc;
    if (cs != cudaStreamCaptureStatusNone)
        return vidi_err_set(err, VIDI_ERR_INVALID, "graph_begin: the stream is already being recorded");
    return vidi_cuda_check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "graph_begin", err);
}

extern "C" vidi_status vidi_cuda_graph_end(vidi_backend *be, void **graph, vidi_err *err) {
    *graph = NULL;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(vidi_cuda_stream(be), &g);
    if (e != cudaSuccess || !g) {
        if (g) cudaGraphDestroy(g);
        cudaGetLastError();  // an invalidated capture leaves a sticky-free error behind
        return vidi_cuda_check(e != cudaSuccess ? e : cudaErrorStreamCaptureInvalidated, "graph_end: recording",
                               err);
    }
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return vidi_cuda_check(e, "graph_end: instantiating", err);
    }
    *graph = (void *)x;
    return VIDI_OK;
}

extern "C" vidi_status vidi_cuda_graph_launch(vidi_backend *be, void *graph, vidi_err *err) {
    if (!graph) return vidi_err_set(err, VIDI_ERR_INVALID, "graph_launch: no graph");
    return vidi_cuda_check(cudaGraphLaunch((cudaGraphExec_t)graph, vidi_cuda_stream(be)), "graph_launch", err);
}

extern "C" void vidi_cuda_graph_free(vidi_backend *be, void *graph) {
    (void)be;
    if (graph) cudaGraphExecDestroy((cudaGraphExec_t)graph);
}
