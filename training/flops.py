"""Model FLOPs of a pretraining step, and model FLOPs utilisation (MFU) on known GPUs.

The count is that of nanoGPT's `estimate_mfu` and the PaLM paper (appendix B): the
matrix multiplications of the model, 2 FLOPs per multiply-add, the backward pass twice
the forward (gradients of inputs and of weights). Elementwise work (LayerNorm, softmax,
activations, biases, dropout) and embedding lookups are left out: a few percent. Work is
counted at the batch's padded shape, which is what the GPU computes: padding lowers
tokens/s, not MFU; the trainer logs padding efficiency beside it for that.

Nothing here imports paddle: every function takes plain numbers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ernie_sm.training.config import ErnieConfig

PASSES = 3  # forward + backward (twice the forward)


@dataclass(frozen=True)
class Matmul:
    """A dense layer on `rows` vectors: [rows, in_features] @ [in_features, out_features]."""

    rows: int
    in_features: int
    out_features: int

    @property
    def flops(self) -> int:
        return 2 * self.rows * self.in_features * self.out_features


def training_flops(
    config: ErnieConfig, rows: int, length: int, masked: int, heads: Sequence[Matmul] = ()
) -> int:
    """FLOPs of the forward and backward pass of one batch of `rows` samples padded to
    `length` tokens: encoder, pooler, the MLM head on its `masked` positions only (0 for
    a batch without masked LM), and `heads`: the classifiers on top (ERNIE 1.0's NSP,
    ERNIE 2.0's task heads), each with its own rows."""
    h, tokens = config.hidden_size, rows * length
    projections = (
        Matmul(tokens, h, 3 * h),  # query, key, value
        Matmul(tokens, h, h),  # attention output
        Matmul(tokens, h, 4 * h),  # feed-forward in
        Matmul(tokens, 4 * h, h),  # feed-forward out
    )
    # Scores Q K^T and their weighting of V: [length, length] per row and head, over all heads.
    attention = 2 * (2 * rows * length * length * h)
    encoder = config.num_hidden_layers * (sum(m.flops for m in projections) + attention)
    mlm = Matmul(masked, h, h).flops + Matmul(masked, h, config.vocab_size).flops
    pooler = Matmul(rows, h, h).flops
    return PASSES * (encoder + pooler + mlm + sum(m.flops for m in heads))


# Dense peak FLOP/s of one GPU per training precision, from NVIDIA's datasheets: tensor-core
# figures without sparsity (those the datasheets mark "with sparsity" halved). float32 is
# the TF32 tensor-core peak where the GPU has TF32, as Paddle runs float32 matmuls in TF32
# there by default (FLAGS_allow_tf32_cublas), else the FP32 peak. SageMaker's instances
# carry the SXM boards of V100 (p3), A100 (p4d), H100 (p5), H200 (p5e) and B200 (p6).
PEAKS: dict[str, dict[str, float]] = {
    # V100 datasheet, SXM2: FP32 15.7, tensor 125 TFLOPS; no bfloat16.
    "V100": {"float32": 15.7e12, "float16": 125e12},
    # T4 datasheet: FP32 8.1, mixed-precision (FP16/FP32) 65 TFLOPS; no bfloat16.
    "T4": {"float32": 8.1e12, "float16": 65e12},
    # NVIDIA publishes no A10G datasheet: these are the A10 datasheet's (TF32 62.5,
    # BF16/FP16 125 TFLOPS dense); the A10G's real tensor rate may differ.
    "A10G": {"float32": 62.5e12, "float16": 125e12, "bfloat16": 125e12},
    # L4 datasheet: TF32 120, BF16/FP16 242 TFLOPS with sparsity.
    "L4": {"float32": 60e12, "float16": 121e12, "bfloat16": 121e12},
    # L40S datasheet: TF32 183, BF16/FP16 362.05 TFLOPS dense.
    "L40S": {"float32": 183e12, "float16": 362.05e12, "bfloat16": 362.05e12},
    # A100 datasheet, SXM4: TF32 156, BF16/FP16 312 TFLOPS dense.
    "A100": {"float32": 156e12, "float16": 312e12, "bfloat16": 312e12},
    # H100 datasheet, SXM: TF32 989, BF16/FP16 1,979 TFLOPS with sparsity.
    "H100": {"float32": 494.5e12, "float16": 989.5e12, "bfloat16": 989.5e12},
    # H200 datasheet, SXM: TF32 989, BF16/FP16 1,979 TFLOPS with sparsity.
    "H200": {"float32": 494.5e12, "float16": 989.5e12, "bfloat16": 989.5e12},
    # HGX B200 datasheet, 8 GPUs: TF32 18, FP16/BF16 36 PFLOPS with sparsity.
    "B200": {"float32": 1.125e15, "float16": 2.25e15, "bfloat16": 2.25e15},
}
# Whole words, so that L4 is not L40S; PCIe boards (other peaks) are not SageMaker's.
_MODEL = re.compile(r"\b(" + "|".join(PEAKS) + r")\b")


def peak_flops(device_name: str | None, precision: str) -> float | None:
    """The dense peak of the GPU named `device_name` (as CUDA names it, e.g. "NVIDIA
    A100-SXM4-40GB") at `precision`; None for a CPU, an unlisted GPU or precision."""
    if not device_name or "PCIE" in device_name.upper():
        return None
    match = _MODEL.search(device_name.upper())
    return PEAKS[match.group(1)].get(precision) if match else None


def utilisation(flops_per_sec: float, peak: float | None) -> float | None:
    """MFU of one GPU: achieved model FLOP/s over its dense peak; None where there is no
    peak or nothing was measured (the line then leaves the figure out, never 0)."""
    return flops_per_sec / peak if peak and flops_per_sec > 0 else None
