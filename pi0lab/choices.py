"""Named choices shared by the model, the config schema and the CLI.

Kept free of torch so that `pi0lab --help` and config checks answer before torch is imported.
"""

from typing import Literal, get_args

Precision = Literal["fp32", "bf16"]  # bf16: autocast on CUDA around fp32 weights (actor.model.precision)
InitialNoise = Literal["gaussian", "zero"]  # the sampling chain's start x_1 (actor.model.openpi.initial_noise)

PRECISIONS: tuple[str, ...] = get_args(Precision)
INITIAL_NOISES: tuple[str, ...] = get_args(InitialNoise)
# How a chunk's elementwise log-probs become one per sample (actor.model.openpi.logprob_reduction):
# "sum" over the executed chunk, real action dims and noisy steps (the recipe), or their "mean".
LogprobReduction = Literal["sum", "mean"]
LOGPROB_REDUCTIONS: tuple[str, ...] = get_args(LogprobReduction)
