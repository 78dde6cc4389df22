"""Named choices shared by the model, the config schema and the CLI.

Kept free of torch so that `pi0lab --help` and config checks answer before torch is imported.
"""

from typing import Literal, get_args

Precision = Literal["fp32", "bf16"]  # bf16: autocast on CUDA around fp32 weights (actor.model.precision)
InitialNoise = Literal["gaussian", "zero"]  # the sampling chain's start x_1 (actor.model.openpi.initial_noise)

PRECISIONS: tuple[str, ...] = get_args(Precision)
INITIAL_NOISES: tuple[str, ...] = get_args(InitialNoise)
