/* kernels/cpu/cpu_paged.h — the CPU twin of paged decode attention
 * (ops.h attention_paged), kept beside cpu_backend.c and wired into its
 * table there. */
#ifndef VIDI_KERNELS_CPU_PAGED_H
#define VIDI_KERNELS_CPU_PAGED_H

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/ops.h"

/* Decode attention over a paged KV cache, as ops.h's attention_paged says:
 *   q, out: F32 [B, Hq, D]; k_cache, v_cache: F32 [n_blocks, block_size, Hkv, D];
 *   block_table: I32 [B, max_blocks]; seq_lens: I32 [B]; all host memory.
 * Key j of sequence b is row j % block_size of block
 * block_table[b][j / block_size]; the query sees all seq_lens[b] keys (it is
 * the newest token). A sequence of 0 keys gives zeros. Every block id a
 * sequence uses must lie in [0, n_blocks) and seq_lens[b] must not exceed
 * max_blocks * block_size, else VIDI_ERR_INVALID and out is untouched.
 * out must not overlap any input. Arithmetic as the dense CPU attention:
 * fp32 dot products and weighted sums, the softmax sum in double. Runs on
 * the caller's thread (decode has one query per sequence). */
vidi_status vidi_cpu_attention_paged(vidi_backend *be, const vidi_tensor *q, const vidi_tensor *k_cache,
                                     const vidi_tensor *v_cache, const vidi_tensor *block_table,
                                     const vidi_tensor *seq_lens, float scale, vidi_tensor *out, vidi_err *err);

#ifdef __cplusplus
}
#endif

#endif
