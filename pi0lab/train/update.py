"""The actor role: PPO / GRPO updates of the policy on a finished rollout.

Samples are the valid chunk steps (t, n) of the window. Each update epoch shuffles all of them into
global batches of about `actor.global_batch_size`, each accumulated from micro-batches of
`actor.micro_batch_size`:

    loss = policy_loss + value_loss - entropy_bonus * entropy      (policy_loss carries the k3 KL term)

then one optimiser step with the gradient norm clipped to `actor.optim.clip_grad`. A step whose
gradient is not finite is skipped (and counted). During the first `critic_warmup_steps` iterations
only the value loss trains. The policy's lr warms up linearly over its first `lr_warmup_steps`
optimiser steps: lr_k = lr * min(1, (k + 1) / warmup). With `algorithm.target_kl` set, the epochs stop early once a global
batch's approx_kl exceeds it (the KL guard).

Data parallel (several actor processes of a placed run): every actor holds the whole rollout and draws the
same shuffle, takes its 1/A share of each global batch, and the gradients, the batch's approx_kl and the
metric sums are summed over the actors before anyone decides. So every actor takes the same steps, and the
result equals one actor on the whole batch up to float summation order. With `actor.data_parallel: fsdp2`
the actors train a sharded copy instead (`pi0lab.train.sharding`): FSDP2 sums the gradients into each
actor's share, and after the update every actor gathers the new weights into the policy the rollout uses.
The gradients are freed after an update; with `actor.offload` AdamW's state waits in host memory between updates.
"""

import math

import torch
from omegaconf import DictConfig
from torch.distributed.tensor import DTensor

from pi0lab.models.policy import Pi0Policy
from pi0lab.rl import explained_variance, ppo_actor_loss, value_loss
from pi0lab.runtime.world import World
from pi0lab.train.advantages import Advantages
from pi0lab.train.rollout import Trajectory
from pi0lab.train.sharding import ShardedActor


class ActorRole:
    def __init__(self, policy: Pi0Policy, actor_cfg: DictConfig, algorithm_cfg: DictConfig, generator: torch.Generator,
                 world: World | None = None):
        self.policy = policy
        self.world = world
        self.cfg = actor_cfg
        self.algo = algorithm_cfg
        self.generator = generator
        self.sharded = ShardedActor(policy, world, actor_cfg.offload) if actor_cfg.data_parallel == "fsdp2" else None
        self.optimizer = build_optimizer(policy if self.sharded is None else self.sharded.policy, actor_cfg.optim)

    def optimizer_state(self) -> dict:
        """AdamW's state for a checkpoint (with fsdp2 a collective of every actor; whole on the first one)."""
        return self.optimizer.state_dict() if self.sharded is None else self.sharded.optimizer_state(self.optimizer)

    def load_optimizer_state(self, state: dict) -> None:
        """Restore AdamW's moments and step counts from a checkpoint; the rates stay this config's `lr` and
        `value_lr` (a resumed run, or one copied from another's checkpoint, may change them)."""
        if self.sharded is None:
            self.optimizer.load_state_dict(state)  # onto the weights' device
            if self.cfg.offload:
                move_optimizer_state(self.optimizer, torch.device("cpu"))
        else:
            self.sharded.load_optimizer_state(self.optimizer, state)
        for group, lr in zip(self.optimizer.param_groups, (self.cfg.optim.lr, self.cfg.optim.value_lr)):
            group["lr"] = lr

    def update(self, traj: Trajectory, adv: Advantages, iteration: int) -> dict[str, float]:
        """Run the update epochs on one rollout; return averaged metrics (seed names, DESIGN §8)."""
        (self.policy if self.sharded is None else self.sharded).train()
        samples = adv.mask.nonzero()  # [S,2]: (t, n) of each valid chunk step
        if samples.shape[0] == 0:
            return {"actor/num_samples": 0.0}
        if self.cfg.offload and self.sharded is None:  # ddp: AdamW's moments back from the host
            move_optimizer_state(self.optimizer, self.policy.device)
        critic_only = iteration < self.cfg.optim.critic_warmup_steps
        num_batches = max(1, round(samples.shape[0] / self.cfg.global_batch_size))  # every sample, batches near the size
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        skipped, steps, kl_stopped = 0, 0, False

        def record(name: str, value: float, weight: int = 1) -> None:
            """A micro-batch's metric counts by its samples, so shares of any split average alike."""
            if math.isfinite(value):
                sums[name] = sums.get(name, 0.0) + value * weight
                counts[name] = counts.get(name, 0) + weight

        for _ in range(self.algo.update_epoch):
            order = samples[torch.randperm(samples.shape[0], generator=self.generator)]
            for batch in order.tensor_split(num_batches):
                batch_kl = 0.0
                self.optimizer.zero_grad(set_to_none=True)
                for micro in self._share(batch).split(self.cfg.micro_batch_size):
                    metrics = self._accumulate(traj, adv, micro, len(batch), critic_only)
                    for name, value in metrics.items():
                        record(name, value, len(micro))
                    batch_kl += metrics["actor/approx_kl"] * len(micro) / len(batch)
                batch_kl = self._sum_gradients_and(batch_kl)
                grad_norm = torch.nn.utils.clip_grad_norm_(self._trainable(), self.cfg.optim.clip_grad)
                if isinstance(grad_norm, DTensor):  # fsdp2: the norm over every actor's shares
                    grad_norm = grad_norm.full_tensor()
                if torch.isfinite(grad_norm):
                    self._warm_up_lr()
                    self.optimizer.step()
                    record("actor/grad_norm", grad_norm.item())
                    steps += 1
                else:
                    skipped += 1
                    self.optimizer.zero_grad(set_to_none=True)
                if self.algo.target_kl is not None and batch_kl > self.algo.target_kl:
                    kl_stopped = True
                    break
            if kl_stopped:
                break
        self.optimizer.zero_grad(set_to_none=True)  # the gradients' memory is free while rollouts run
        if self.cfg.offload and self.sharded is None:
            move_optimizer_state(self.optimizer, torch.device("cpu"))
        if self.sharded is not None:
            self.sharded.copy_full_weights_to(self.policy)
        sums, counts = self._sum_metrics(sums, counts)
        out = {name: sums[name] / counts[name] for name in sums}
        if traj.values is not None and adv.returns is not None:  # the rollout's critic over the whole window
            out["actor/explained_variance"] = explained_variance(traj.values[:-1], adv.returns, adv.mask).item()
        out.update({
            "actor/optimizer_steps": float(steps),
            "actor/skipped_steps": float(skipped),
            "actor/kl_stopped": float(kl_stopped),
            "actor/num_samples": float(samples.shape[0]),
        })
        return out

    def _share(self, batch: torch.Tensor) -> torch.Tensor:
        """This actor's part of a global batch [M,2] (all of it with one actor)."""
        if self.world is None or self.world.num_actors == 1:
            return batch
        return batch.tensor_split(self.world.num_actors)[self.world.actor_index]

    def _sum_gradients_and(self, batch_kl: float) -> float:
        """Sum the accumulated gradients (one flat buffer) and the batch's approx_kl over the actors."""
        if self.world is None or self.world.num_actors == 1:
            return batch_kl
        if self.sharded is not None:  # FSDP2 has reduce-scattered the gradients in backward
            return float(self.world.sum_over_actors(torch.tensor([batch_kl]))[0])
        params = self._trainable()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([batch_kl], device=grads[0].device)])
        self.world.sum_over_actors(flat)
        offset = 0
        for p in params:
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        return float(flat[-1])

    def _sum_metrics(self, sums: dict[str, float], counts: dict[str, int]) -> tuple[dict, dict]:
        """Metric sums and counts over the actors (every actor records the same names)."""
        if self.world is None or self.world.num_actors == 1:
            return sums, counts
        names = sorted(sums)
        both = torch.tensor([sums[n] for n in names] + [float(counts[n]) for n in names], dtype=torch.float64)
        self.world.sum_over_actors(both)
        k = len(names)
        return dict(zip(names, both[:k].tolist())), dict(zip(names, both[k:].tolist()))

    def _accumulate(self, traj: Trajectory, adv: Advantages, micro: torch.Tensor, batch_size: int, critic_only: bool) -> dict[str, float]:
        """Forward + backward of one micro-batch, its loss scaled by its share of the global batch."""
        t, n = micro[:, 0], micro[:, 1]
        t_np, n_np = t.numpy(), n.numpy()
        device = self.policy.device
        prefix = traj.prefix_at(t, n, device)  # the rollout's frozen prefix: no SigLIP / VLM pass here
        if prefix is None:
            obs = {key: traj.obs[key][t_np, n_np] for key in ("main_images", "wrist_images", "states")}
            obs["task_descriptions"] = [traj.task_descriptions[i] for i in n_np.tolist()]
        else:
            obs = {"states": traj.obs["states"][t_np, n_np]}
        evaluate = self.policy.evaluate if self.sharded is None else self.sharded
        out = evaluate(obs, traj.chains[t, n].to(device), traj.noisy_steps[t, n].to(device), prefix)
        advantages = adv.advantages[t, n].to(device)
        policy_loss, actor_metrics = ppo_actor_loss(
            out["logprobs"], traj.logprobs[t, n].to(device), advantages,
            clip_low=self.algo.clip_ratio_low, clip_high=self.algo.clip_ratio_high,
            dual_clip=self.algo.clip_ratio_c, kl_coef=self.algo.kl_beta,
        )
        entropy = out["entropy"].mean()
        loss = policy_loss - self.algo.entropy_bonus * entropy
        metrics = {
            "actor/policy_loss": policy_loss.item(),
            "actor/approx_kl": actor_metrics["approx_kl"].item(),
            "actor/pg_clipfrac": actor_metrics["clipfrac"].item(),
            "actor/ratio": actor_metrics["ratio"].item(),
            "actor/kl_k3": actor_metrics["kl_k3"].item(),
            "actor/entropy": entropy.item(),
        }
        if self.algo.loss_type == "actor_critic":
            critic_loss, critic_metrics = value_loss(
                out["values"], traj.values[t, n].to(device), adv.returns[t, n].to(device),
                clip=self.algo.value_clip, huber_delta=self.algo.huber_delta,
            )
            loss = critic_loss if critic_only else loss + critic_loss
            metrics["actor/value_loss"] = critic_loss.item()
            metrics["actor/value_clip_ratio"] = critic_metrics["value_clip_ratio"].item()
        (loss * len(micro) / batch_size).backward()
        metrics["actor/loss"] = loss.item()
        return metrics

    def _warm_up_lr(self) -> None:
        """Set the policy group's lr for the coming step k (k = steps taken so far, read from AdamW's state)."""
        warmup = self.cfg.optim.lr_warmup_steps
        if warmup <= 0:
            return
        group = self.optimizer.param_groups[0]
        state = self.optimizer.state.get(group["params"][0], {})
        k = int(state["step"]) if "step" in state else 0
        group["lr"] = self.cfg.optim.lr * min(1.0, (k + 1) / warmup)

    def _trainable(self) -> list[torch.nn.Parameter]:
        if self.sharded is not None:
            return self.sharded.trainable()
        return [p for p in self.policy.parameters() if p.requires_grad]


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move AdamW's moments to `device` (its step counts stay where AdamW keeps them, on the host)."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step" and torch.is_tensor(value):
                state[key] = value.to(device)


def build_optimizer(policy: Pi0Policy, optim_cfg: DictConfig) -> torch.optim.AdamW:
    """AdamW with two parameter groups: the value head at `value_lr`, everything else trainable at `lr`."""
    value_params = [p for name, p in policy.named_parameters() if ".value_head." in f".{name}" and p.requires_grad]
    value_ids = {id(p) for p in value_params}
    policy_params = [p for p in policy.parameters() if p.requires_grad and id(p) not in value_ids]
    groups = [{"params": policy_params, "lr": optim_cfg.lr}]
    if value_params:
        groups.append({"params": value_params, "lr": optim_cfg.value_lr})
    return torch.optim.AdamW(
        groups, betas=(optim_cfg.adam_beta1, optim_cfg.adam_beta2), eps=optim_cfg.adam_eps,
        weight_decay=optim_cfg.weight_decay,
    )
