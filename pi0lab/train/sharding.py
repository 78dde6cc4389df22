"""FSDP2 for the actor (`actor.data_parallel: fsdp2`): the trainable weights, their gradients and AdamW's
moments sharded over the actor processes, one 1/A share in each.

    trained = ShardedActor(policy, world)     # every actor process, collectively
    out = trained(obs, chains, noisy_steps, prefix)   # = policy.evaluate(...): gathers, runs, frees
    loss.backward()                           # gradients reduce-scattered: each process keeps its share's sum
    optimizer.step()                          # AdamW on the shares only
    trained.copy_full_weights_to(policy)      # all-gather: the rollout acts with the whole updated weights

The training copy is a deep copy of the policy that *shares* its frozen weights (the SigLIP / VLM prefix
under `train_expert_only`): they are neither copied nor sharded (`ignored_params`), only the trainable ones
are. pi0 runs its layers by parts (the VLM's and the expert's layers meet inside each attention), never
through a layer's own forward, so the whole model is one FSDP unit, entered through this module's forward:
its trainable weights are gathered for a micro-batch's forward + backward and freed after it. Bytes per
actor process for P fp32 trainable weights over A actors: between updates the rollout's full copy 4P and
the shares of the weights and AdamW's moments 12P / A (DDP: 12P); at an update's peak 4P more for the
gathered weights and 4P / A for the gradients' share (DDP: 16P). So its peak is below DDP's from A = 3 on, most for
full fine-tuning (the real pi0's 3.2 B weights: 52 GB per process with DDP, 32 GB with 8 FSDP2 actors).

With `actor.offload` the shards, their gradients and AdamW's state live in host memory (FSDP2's
`CPUOffloadPolicy`, pinned on CUDA): AdamW steps on the host, and the device holds only what a
micro-batch gathers, for the rollout beside the actor on its GPU.

Gradients are summed over the processes, not averaged (`set_gradient_divide_factor(1)`): every micro-batch's
loss is already scaled by its share of the global batch, as in the DDP path.
"""

import copy

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

from pi0lab.models.policy import Pi0Policy
from pi0lab.runtime.world import World


class ShardedActor(nn.Module):
    """The actor's training copy of `policy`, sharded over the actor processes of `world` (collective)."""

    def __init__(self, policy: Pi0Policy, world: World, offload: bool = False):
        super().__init__()
        frozen = {id(p): p for p in policy.parameters() if not p.requires_grad}
        self.policy = copy.deepcopy(policy, memo=dict(frozen))  # frozen weights: the same tensors as the rollout's
        mesh = DeviceMesh.from_group(world.groups["actor"], world.device.type)
        # offload: the shards, their gradients and AdamW's state live in host memory (pinned on CUDA)
        placement = CPUOffloadPolicy(pin_memory=world.device.type == "cuda") if offload else OffloadPolicy()
        fully_shard(self, mesh=mesh, ignored_params=set(frozen.values()), offload_policy=placement)
        self.set_gradient_divide_factor(1.0)
        self.set_force_sum_reduction_for_comms(True)  # plain SUM reductions: gloo has no PREMUL_SUM

    def forward(self, env_obs: dict, chain: torch.Tensor, noisy_steps: torch.Tensor, prefix=None) -> dict:
        out = self.policy.evaluate(env_obs, chain, noisy_steps, prefix)
        # FSDP2 hooks the outputs for backward; it warns of views (an in-place op on one would skip its hook)
        return {k: v.clone() if v is not None and v._base is not None else v for k, v in out.items()}

    def trainable(self) -> list[nn.Parameter]:
        """The trainable weights in the policy's order: the shards (DTensors), or the gathered weights between
        `unshard()` and `reshard()`."""
        return [p for p in self.policy.parameters() if p.requires_grad]

    @torch.no_grad()
    def copy_full_weights_to(self, policy: Pi0Policy) -> None:
        """All-gather every trainable weight into the rollout's full copy (collective over the actors)."""
        self.unshard()  # the module's parameters are the gathered weights (on the device) until reshard
        targets = [p for p in policy.parameters() if p.requires_grad]
        for target, gathered in zip(targets, self.trainable(), strict=True):
            target.copy_(gathered)
        self.reshard()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict:
        """AdamW's whole state, keyed by parameter name, on CPU (collective; empty except on the first actor)."""
        return get_optimizer_state_dict(self, optimizer, options=StateDictOptions(full_state_dict=True,
                                                                                  cpu_offload=True))

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict) -> None:
        """Shard a whole AdamW state written by `optimizer_state` into this process's share (collective)."""
        set_optimizer_state_dict(self, optimizer, state, options=StateDictOptions(full_state_dict=True))
