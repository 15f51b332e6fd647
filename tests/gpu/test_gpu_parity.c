/* tests/gpu/test_gpu_parity.c <case dir> — one reference case of
 * tools/golden on the CUDA backend (device 0): the checks of
 * tests/parity/test_parity.c, which this file includes, under bf16
 * tolerances:
 *   - M-RoPE positions and the tokenizer (backend-independent, exact);
 *   - vision embeddings of every media item against the reference's;
 *   - prompt logits (reference vision embeddings scattered in) at
 *     logits_positions and at the last position, and the first logits of
 *     vidi_generate with the reference's and with our vision embeddings;
 *   - 32 greedy tokens equal to the reference's, or the first difference a
 *     near-tie by the reference's greedy_top2_gaps;
 *   - chunked prefill against one-shot, and a prompt that does not fit the KV
 *     cache is a clean VIDI_ERR_RANGE.
 * Tolerances (bf16 weights and activations, fp32 accumulation; bf16 keeps 8
 * significant bits): logits and vision embeddings max|ours - ref| <=
 * 5e-2 * max|ref| + 2e-2; a greedy divergence is accepted where the
 * reference's top-2 gap is below 0.1 and our two logits are as close (give
 * or take twice the logit tolerance); chunked prefill's first logits within
 * 5e-2 * max|one-shot| + 2e-2 of one-shot's (its tokens are reported, not
 * required equal: bf16 rounding differs with the chunking).
 * Exit 77 when there is no CUDA device or the reference data are missing.
 */
#define PARITY_NO_MAIN
#include "../parity/test_parity.c"

#include "kernels/cuda/cuda_info.h"

static const parity_profile PROFILE_CUDA = {
    .name = "cuda",
    .logits = {5e-2, 2e-2},
    .e2e = {5e-2, 2e-2},
    .vision = {5e-2, 2e-2},
    .near_tie = 0.1,
    .chunk = {5e-2, 2e-2},
    .chunk_tokens_equal = 0,
};

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_gpu_parity <case dir>\n");
        return 2;
    }
    int n_dev = vidi_cuda_device_count();
    if (n_dev == 0) {
        printf("skip: no CUDA device\n");
        return 77;
    }
    static pcase c;
    int r = case_load(&c, argv[1]);
    if (r) {
        case_free(&c);
        return r == 77 ? 77 : 1;
    }
    char dev[256];
    vidi_cuda_device_describe(0, dev, sizeof dev);
    printf("gpu parity %s (%s) on device 0: %s\n", c.name, c.model_dir, dev);
    vidi_err err;
    vidi_backend *be = vidi_backend_cuda_create(0, &err);
    if (!be) {
        CHECK(0, "cuda backend: %s", err.msg);
    } else {
        /* the tolerances above are for bf16; an f32 backend meets them too */
        printf(" activations %s, weights %s\n", vidi_dtype_name(be->act_dtype),
               be->host_memory ? "in host memory" : vidi_dtype_name(be->weight_dtype));
        run_profile(&c, be, &PROFILE_CUDA, 1);
        be->ops->destroy(be);
    }
    printf("%s: %d checks, %d failed\n", c.name, test_checks, test_failures);
    case_free(&c);
    return test_failures ? 1 : 0;
}
