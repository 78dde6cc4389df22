"""Flow-matching sampling math: time grid, ODE / flow-SDE / CPS / ReinFlow steps, exact log-probs, chains.

openpi convention: x_t = t * noise + (1 - t) * action, velocity v ~ noise - action, sampling runs t: 1 -> 0.
Imports only torch.
"""

from pi0lab.flow.chain import (
    DEFAULT_NOISE_STEPS,
    METHODS,
    FlowChain,
    Transitions,
    gather_steps,
    recompute_logprobs,
    sample_chain,
)
from pi0lab.flow.logprob import chunk_logprob, gaussian_entropy, gaussian_logprob
from pi0lab.flow.steps import bounded_std, cps_step, flow_sde_step, ode_step, sde_sigmas, time_grid

__all__ = [
    "DEFAULT_NOISE_STEPS",
    "METHODS",
    "FlowChain",
    "Transitions",
    "bounded_std",
    "chunk_logprob",
    "cps_step",
    "flow_sde_step",
    "gather_steps",
    "gaussian_entropy",
    "gaussian_logprob",
    "ode_step",
    "recompute_logprobs",
    "sample_chain",
    "sde_sigmas",
    "time_grid",
]
