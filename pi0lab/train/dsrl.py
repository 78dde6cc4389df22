"""DSRL: steer a frozen pi0 by learning its initial noise x_1 with SAC (Wagenmaker et al., CoRL 2025).

With the ODE sampler pi0's actions are a deterministic function of the observation and x_1, and on a
few-shot checkpoint the noise decides most outcomes. DSRL leaves pi0 as it is and learns a small noise
policy over x_1 from env rewards, with SAC:

    o_t  --pi0's prefix (frozen)-->  features f_t [W], robot state s_t [S] (z-scored)
    a_t  ~ pi(. | f_t, s_t),  a_t in (-1, 1)^D,  D = noise_horizon * noise_dims   (tanh-squashed Gaussian)
    x_1  = 0 [H,A];  x_1[:noise_horizon, :noise_dims] = noise_bound * a_t          (`NoiseBlock`)
    chunk = pi0's ODE from (o_t, x_1), executed;  r_t = reward_coef * sum_c r_tc - step_penalty

The noise block. pi0 executes only the first C = num_action_chunks horizon steps and the E = 7 real
action dims of its [H, 32] output, so by default the policy sets exactly x_1[:C, :E] (35 numbers for the
nano recipe instead of 320): action step h, dim d starts its flow at x_1[h, d], and the other entries
reach the executed ones only through the expert's attention. They stay at 0, the prior's mean (the x_1
that scored best of the fixed choices on the SFT checkpoint, 42.5% against 31.6% for a Gaussian draw),
so the executed chunk is a deterministic function of (o_t, a_t) and the critic sees everything that
decides it. `algorithm.sac.noise_horizon` / `noise_dims` widen the block up to the whole x_1.
The bound: x_1 = 1.5 tanh(u) keeps the start within 1.5 standard deviations of what pi0 was trained on
(87% of N(0, 1)), and the initial policy (u ~ N(0, 1)) then draws x_1 with std 0.94, close to pi0's own
N(0, I): DSRL starts from roughly pi0's sampler and can concentrate it anywhere pi0 has seen noise.

Features. `Pi0.prefill` pools, over the valid prefix tokens (images and prompt), the input of the last
VLM layer after its norm: the deepest prefix state that pi0's training shapes (`PrefixCache`). The pool
comes with the prefix pass the rollout runs anyway. The critics and the actor each encode features
and state with their own Linear -> LayerNorm -> tanh (latent_dim each), then an MLP.

Replay buffer. Transitions are stored as (f, s, a, r, done, f', s'): features, not images. That is exact
because the prefix is frozen: pi0 would compute the same f from the same observation at any later time.
An episode's end, by success or time limit, is `done` (no bootstrap): Q is the return to the end of the
episode. One transition is one chunk step; the buffer keeps the newest `replay_buffer_size`.

SAC (pi0lab.rl.sac): gradient steps start once the buffer holds `learning_starts` transitions (until
then the fresh policy explores around x_1 = 0 and the critic gets data to fit), and the first
`critic_warmup_iterations` rounds step the critic only (the actor keeps its start, mean x_1 = 0, until the
critic has seen that many windows); the TD target takes the minimum of `target_q_heads` random heads of the
target ensemble (REDQ), the actor the mean of all heads. The target leaves out -alpha log pi unless
`backup_entropy` (as the reference): episodes end at success, so an entropy return per chunk step would
pay the policy for taking longer (the fresh 35-dim policy's entropy is ~23 nats: alpha * 23 per chunk
step, against one success reward of 1).

A DSRL checkpoint's `model/` holds the noise policy, critics and temperature (`dsrl_agent.pt`); pi0 stays
at `actor.model.model_path`, which a resumed run reads again.
"""

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from pi0lab.envs.base import select_envs
from pi0lab.models.config import Pi0Config
from pi0lab.rl import (n_step_returns, polyak_update, sac_actor_loss, sac_critic_loss, sac_q_target, sac_temperature_loss,
                       squashed_gaussian_sample)
from pi0lab.train.checkpoint import load_checkpoint_state, rng_state, save_checkpoint, set_rng_state
from pi0lab.train.evaluate import EvalResult, evaluate
from pi0lab.train.loggers import MetricLogger
from pi0lab.train.roles import EnvRole, build_policy
from pi0lab.train.rollout import Timer
from pi0lab.train.trainer import IterationEvent, TrainingLoop, single_process_device

AGENT_FILE = "dsrl_agent.pt"


# ------------------------------------------------------------------------------------------ noise block


@dataclass(frozen=True)
class NoiseBlock:
    """The part of x_1 [H,A] the noise policy sets: x_1[:steps, :dims] = bound * a, 0 elsewhere."""

    steps: int
    dims: int
    bound: float
    horizon: int  # the model's H
    model_dims: int  # the model's A

    @classmethod
    def for_model(cls, sac: DictConfig, config: Pi0Config) -> "NoiseBlock":
        if not 1 <= sac.noise_horizon <= config.action_horizon or not 1 <= sac.noise_dims <= config.action_dim:
            raise ValueError(
                f"algorithm.sac.noise_horizon={sac.noise_horizon} and algorithm.sac.noise_dims={sac.noise_dims} "
                f"do not fit this model's x_1 [{config.action_horizon}, {config.action_dim}] (horizon, action dims)")
        return cls(sac.noise_horizon, sac.noise_dims, sac.noise_bound, config.action_horizon, config.action_dim)

    @property
    def size(self) -> int:
        """D, the SAC action's dims."""
        return self.steps * self.dims

    def to_noise(self, action: Tensor) -> Tensor:
        """SAC actions [B,D] in (-1, 1) -> pi0's x_1 [B,H,A]."""
        noise = action.new_zeros(action.shape[0], self.horizon, self.model_dims)
        noise[:, : self.steps, : self.dims] = self.bound * action.reshape(-1, self.steps, self.dims)
        return noise


# ------------------------------------------------------------------------------------------ networks


def mlp(in_dim: int, hidden_dims: list[int], out_dim: int) -> nn.Sequential:
    """Linear -> ReLU for each hidden width, then a Linear to out_dim."""
    layers, width = [], in_dim
    for hidden in hidden_dims:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, out_dim))


class ObservationEncoder(nn.Module):
    """features [B,W], state [B,S] -> [B,2L]: tanh(LayerNorm(Linear(.))) of each, concatenated."""

    def __init__(self, feature_dim: int, state_dim: int, latent_dim: int):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(feature_dim, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())
        self.state = nn.Sequential(nn.Linear(state_dim, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh())
        self.out_dim = 2 * latent_dim

    def forward(self, features: Tensor, state: Tensor) -> Tensor:
        return torch.cat([self.features(features), self.state(state)], dim=-1)


class NoisePolicy(nn.Module):
    """The actor: a tanh-squashed Gaussian over the noise block, a = tanh(u), u ~ N(mean, std^2).

    log_std = lo + (hi - lo) sigmoid(raw + log(-lo / hi)) keeps std in [e^lo, e^hi] without a hard clip and
    is 0 at raw = 0. The head's last layer starts at zero weights, so the fresh policy's mean noise is exactly
    x_1 = 0 (it scores what the SFT checkpoint scores from x_1 = 0) whatever the observation, and its bias
    sets log_std = log(initial_std): at 1, its samples u ~ N(0, 1) draw x_1 close to pi0's own N(0, I).
    """

    LOG_STD_RANGE = (-5.0, 2.0)

    def __init__(self, feature_dim: int, state_dim: int, action_dim: int, latent_dim: int, hidden_dims: list[int],
                 initial_std: float = 1.0):
        super().__init__()
        low, high = self.LOG_STD_RANGE
        if not math.exp(low) < initial_std < math.exp(high):
            raise ValueError(f"algorithm.sac.initial_std={initial_std} must lie in (e^{low}, e^{high}) = "
                             f"({math.exp(low):.4f}, {math.exp(high):.2f}), the range of the noise policy's std")
        self.encoder = ObservationEncoder(feature_dim, state_dim, latent_dim)
        self.head = mlp(self.encoder.out_dim, hidden_dims, 2 * action_dim)
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)  # mean 0
        with torch.no_grad():  # raw = logit((log initial_std - lo) / (hi - lo)) - log(-lo / hi)
            fraction = (math.log(initial_std) - low) / (high - low)
            self.head[-1].bias[action_dim:] = math.log(fraction / (1 - fraction)) - math.log(-low / high)

    def forward(self, features: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """-> mean [B,D], log_std [B,D] of u."""
        mean, raw = self.head(self.encoder(features, state)).chunk(2, dim=-1)
        low, high = self.LOG_STD_RANGE
        return mean, low + (high - low) * torch.sigmoid(raw + math.log(-low / high))

    def sample(self, features: Tensor, state: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """-> action [B,D] in (-1, 1), reparameterised, and its log-prob [B]."""
        return squashed_gaussian_sample(*self(features, state), generator=generator)

    def mean_action(self, features: Tensor, state: Tensor) -> Tensor:
        """The deterministic action tanh(mean) [B,D] (evaluation)."""
        return torch.tanh(self(features, state)[0])


class EnsembleLinear(nn.Module):
    """E independent linear maps applied at once: x [E,B,I] -> x W_e + b_e [E,B,O] (nn.Linear's init per head)."""

    def __init__(self, num_heads: int, in_dim: int, out_dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(num_heads, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_heads, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: Tensor, heads: Tensor | None = None) -> Tensor:
        """x [E,B,I] (or [K,B,I] with `heads`, K head indices: only those heads' maps) -> [E or K,B,O]."""
        if heads is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias[heads], x, self.weight[heads])


class QEnsemble(nn.Module):
    """E critics Q_e(f, s, a): one shared observation encoder, then E independent MLPs -> values [E,B].

    With `layer_norm` each hidden layer is Linear -> LayerNorm -> ReLU, the norm per head and sample, without
    affine weights (the next Linear absorbs them): the normalised critic that keeps a small ensemble stable
    at many updates per transition (DroQ, RLPD).
    """

    def __init__(self, feature_dim: int, state_dim: int, action_dim: int, latent_dim: int, hidden_dims: list[int],
                 num_heads: int, layer_norm: bool = False):
        super().__init__()
        self.encoder = ObservationEncoder(feature_dim, state_dim, latent_dim)
        widths = [self.encoder.out_dim + action_dim, *hidden_dims]
        layers = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            norm = [nn.LayerNorm(width_out, elementwise_affine=False)] if layer_norm else []
            layers += [EnsembleLinear(num_heads, width_in, width_out), *norm, nn.ReLU()]
        self.heads = nn.Sequential(*layers, EnsembleLinear(num_heads, widths[-1], 1))
        self.num_heads = num_heads

    def forward(self, features: Tensor, state: Tensor, action: Tensor, heads: Tensor | None = None) -> Tensor:
        """-> Q [E,B]; with `heads` (K indices) only those heads are computed: [K,B], the rows of Q they index."""
        x = torch.cat([self.encoder(features, state), action], dim=-1)  # [B, 2L + D]
        x = x.expand(self.num_heads if heads is None else len(heads), *x.shape)
        for layer in self.heads:
            x = layer(x, heads) if isinstance(layer, EnsembleLinear) else layer(x)
        return x.squeeze(-1)


# ------------------------------------------------------------------------------------------ agent


class SacAgent(nn.Module):
    """Noise policy, Q ensemble, its target copy, the temperature alpha = exp(log_alpha), and their optimisers.

    `sac` is the `algorithm.sac` config group (any object with its attributes).
    """

    def __init__(self, feature_dim: int, state_dim: int, action_dim: int, sac: DictConfig, gamma: float):
        super().__init__()
        hidden = list(sac.hidden_dims)
        self.actor = NoisePolicy(feature_dim, state_dim, action_dim, sac.latent_dim, hidden, sac.initial_std)
        self.critic = QEnsemble(feature_dim, state_dim, action_dim, sac.latent_dim, hidden, sac.num_q_heads,
                                sac.critic_layer_norm)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(sac.initial_alpha)))
        # what the networks read is (f - feature_mean) / feature_std (`normalize_features`; identity until set)
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.target_entropy = -action_dim / 2 if sac.target_entropy is None else sac.target_entropy
        # transitions span n_step chunk steps (their rewards summed, `n_step_returns`): the bootstrap discounts gamma^n
        self.gamma = gamma**sac.n_step
        self.tau, self.target_q_heads, self.backup_entropy = sac.tau, sac.target_q_heads, sac.backup_entropy
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=sac.actor_lr, fused=True)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=sac.critic_lr, fused=True)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=sac.alpha_lr, fused=True)

    def set_feature_stats(self, features: Tensor) -> None:
        """Fix the features' normalisation from a batch [N,W]: mean and std per dim (std + 1e-3)."""
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_std.copy_(features.std(dim=0) + 1e-3)

    def normalize_features(self, features: Tensor) -> Tensor:
        """pi0's pooled prefix features [N,W] -> what the actor and critics read [N,W]."""
        return (features - self.feature_mean) / self.feature_std

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer, "alpha": self.alpha_optimizer}

    def update(self, batch: dict[str, Tensor], generator: torch.Generator, update_actor: bool = True
               ) -> dict[str, Tensor]:
        """One SAC step on a batch of transitions: critic, then actor, then temperature, then the target critic
        (without `update_actor`: the critic and its target only).

        batch: features [B,W], states [B,S], actions [B,D], rewards [B], dones [B] bool, next_features,
        next_states. The target's minimum runs over `target_q_heads` heads drawn at random each step; its
        entropy term only with `backup_entropy`.
        Returns detached 0-dim metrics.
        """
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_action, next_logprob = self.actor.sample(batch["next_features"], batch["next_states"], generator)
            heads = torch.randperm(self.critic.num_heads, generator=generator, device=generator.device)
            next_q = self.target_critic(batch["next_features"], batch["next_states"], next_action,
                                        heads=heads[: self.target_q_heads])  # only the heads the minimum reads
            target = sac_q_target(batch["rewards"], batch["dones"], next_q, next_logprob,
                                  alpha if self.backup_entropy else 0.0, self.gamma)
        q = self.critic(batch["features"], batch["states"], batch["actions"])
        critic_loss = sac_critic_loss(q, target)
        _step(self.critic_optimizer, critic_loss)
        metrics = {"critic_loss": critic_loss.detach(), "alpha": alpha, "q_mean": q.detach().mean()}
        if not update_actor:
            polyak_update(self.target_critic.parameters(), self.critic.parameters(), self.tau)
            return metrics

        action, logprob = self.actor.sample(batch["features"], batch["states"], generator)
        self.critic.requires_grad_(False)  # the actor's loss differentiates Q in the action only
        actor_loss = sac_actor_loss(self.critic(batch["features"], batch["states"], action), logprob, alpha)
        self.critic.requires_grad_(True)
        _step(self.actor_optimizer, actor_loss)

        _step(self.alpha_optimizer, sac_temperature_loss(self.log_alpha, logprob, self.target_entropy))
        polyak_update(self.target_critic.parameters(), self.critic.parameters(), self.tau)
        return metrics | {"actor_loss": actor_loss.detach(), "entropy": -logprob.detach().mean()}


def sac_updates(agent: SacAgent, buffer: "ReplayBuffer", sac: DictConfig, generator: torch.Generator,
                before_update=None, update_actor: bool = True) -> dict[str, float]:
    """`sac.updates_per_iteration` SAC steps on batches from the buffer -> the mean of each metric over the steps
    that ran. A step runs once the buffer holds `sac.learning_starts` transitions (at least one; until then the
    fresh policy explores). Every step updates the critic; steps 0, k, 2k, ... of the round (k =
    `sac.critic_actor_ratio`) also the actor and the temperature, unless not `update_actor` (a critic warm-up
    round). `before_update(i)`, when given, may add transitions to the buffer before step i (the learner
    process streams the window being collected)."""
    updates = []
    for i in range(sac.updates_per_iteration):
        if before_update is not None:
            before_update(i)
        if buffer.size >= max(sac.learning_starts, 1):
            updates.append(agent.update(buffer.sample(sac.batch_size, generator), generator,
                                        update_actor and i % sac.critic_actor_ratio == 0))
    names = dict.fromkeys(name for u in updates for name in u)
    return {name: torch.stack([u[name] for u in updates if name in u]).mean().item() for name in names}


def _step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# ------------------------------------------------------------------------------------------ replay buffer


class ReplayBuffer:
    """A ring of the newest `capacity` transitions, tensors on one device (see the module docstring).

    Fields: features [N,W], states [N,S], actions [N,D], rewards [N], dones [N] bool, next_features [N,W],
    next_states [N,S]. Rows [0, size) are filled; `position` is the row the next transition goes to.
    """

    FIELDS = ("features", "states", "actions", "rewards", "dones", "next_features", "next_states")

    def __init__(self, capacity: int, device: torch.device | str = "cpu"):
        self.capacity, self.device = capacity, torch.device(device)
        self.storage: dict[str, Tensor] = {}
        self.size = self.position = 0

    def add(self, transitions: dict[str, Tensor]) -> None:
        """Append N transitions (each field [N,...]); past capacity the oldest are overwritten."""
        if set(transitions) != set(self.FIELDS):
            raise ValueError(f"transitions need the fields {self.FIELDS}, got {sorted(transitions)}")
        count = len(transitions["rewards"])
        keep = min(count, self.capacity)  # of more than capacity, only the newest survive
        rows = (self.position + torch.arange(keep, device=self.device)) % self.capacity
        for name in self.FIELDS:
            values = transitions[name][count - keep :].to(self.device)
            if name not in self.storage:
                self.storage[name] = torch.zeros((self.capacity, *values.shape[1:]), dtype=values.dtype,
                                                 device=self.device)
            self.storage[name][rows] = values
        self.position = (self.position + keep) % self.capacity
        self.size = min(self.size + keep, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
        """batch_size transitions drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("the replay buffer is empty: add transitions before sampling")
        rows = torch.randint(self.size, (batch_size,), generator=generator, device=self.device)
        return {name: values[rows] for name, values in self.storage.items()}

    def state_dict(self) -> dict:
        return {"size": self.size, "position": self.position,
                "storage": {name: values[: self.size].cpu() for name, values in self.storage.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.storage, self.size, self.position = {}, 0, 0
        if state["size"]:
            self.add({name: values for name, values in state["storage"].items()})
        self.position = state["position"]


# ------------------------------------------------------------------------------------------ learner process


def _learner_state(agent: SacAgent, generator: torch.Generator) -> dict:
    """Everything an update changes: the agent, its optimisers, the update generator."""
    return {"agent": agent.state_dict(), "optimizers": {n: o.state_dict() for n, o in agent.optimizers().items()},
            "generator": generator.get_state()}


def _load_learner_state(agent: SacAgent, generator: torch.Generator, state: dict) -> None:
    agent.load_state_dict(state["agent"])
    for name, optimizer in agent.optimizers().items():
        optimizer.load_state_dict(state["optimizers"][name])
    generator.set_state(state["generator"])


def streamed_steps(update: int, updates: int, step_sizes: list[int]) -> int:
    """How many of the window's chunk steps SAC step `update` (of `updates` a round) reads, counted from the
    window's start: the largest k with S_k / S_T <= update / updates, S_k the sum of the first k of
    `step_sizes` (T of them). The sizes are the previous window's transitions per chunk step: pi0 runs for the
    envs still playing, so they say where a window's collection time goes (most in its first steps, before
    episodes end), and the round keeps pace with the window as it is played. Equal sizes give
    floor(update * T / updates). Step 0 reads none of the window, the last all but its final step; a window
    that ended earlier gives at most its own steps. A fixed schedule, not "whatever has arrived": a run does
    not depend on how fast the two processes go."""
    total, read, reads = sum(step_sizes), 0, 0
    for size in step_sizes:
        read += size
        if read * updates > update * total:
            break
        reads += 1
    return reads


class _WindowStream:
    """The learner's side of a window being collected: the trainer's chunk steps of transitions arrive as
    ("step", transitions) messages and a final ("end", None); `before_update(i)` adds to the buffer the steps
    SAC step i reads (`streamed_steps`), waiting for them if they have not arrived."""

    def __init__(self, conn, buffer: "ReplayBuffer", sac: DictConfig, step_sizes: list[int]):
        self.conn, self.buffer, self.sac, self.step_sizes = conn, buffer, sac, step_sizes
        self.arrived, self.added, self.ended = [], 0, False

    def _receive(self) -> None:
        command, payload = self.conn.recv()
        if command == "end":
            self.ended = True
        else:
            self.arrived.append(payload)

    def before_update(self, update: int) -> None:
        while not self.ended and self.conn.poll():  # read eagerly, so the trainer never waits on a full pipe
            self._receive()
        wanted = streamed_steps(update, self.sac.updates_per_iteration, self.step_sizes)
        while not self.ended and len(self.arrived) < wanted:
            self._receive()
        self._add(min(wanted, len(self.arrived)))  # fewer only where the window ended before `wanted` steps

    def finish(self) -> None:
        """After the round: the rest of the window."""
        while not self.ended:
            self._receive()
        self._add(len(self.arrived))

    def _add(self, count: int) -> None:
        for transitions in self.arrived[self.added : count]:
            self.buffer.add(transitions)
        self.added = max(self.added, count)


def _learn(conn, sizes: tuple[int, int, int], sac: DictConfig, gamma: float, start: dict) -> None:
    """The learner process: a mirror of the trainer's agent and buffer that runs the SAC updates on one thread.

    Messages: ("update", (the previous window's step sizes, update_actor)), then the window's ("step", transitions)
    and ("end", None), each round replied
    to with (metrics, seconds, the actor's state dict); ("state", None), replied to with the whole learner
    state; ("close", None).
    """
    torch.set_num_threads(1)
    agent, generator = SacAgent(*sizes, sac, gamma), torch.Generator()
    _load_learner_state(agent, generator, start["learner"])
    buffer = ReplayBuffer(sac.replay_buffer_size)
    buffer.load_state_dict(start["buffer"])
    while True:
        command, payload = conn.recv()
        if command == "close":
            return
        if command == "state":
            conn.send(_learner_state(agent, generator))
            continue
        step_sizes, update_actor = payload
        began, stream = time.perf_counter(), _WindowStream(conn, buffer, sac, step_sizes)
        metrics = sac_updates(agent, buffer, sac, generator, stream.before_update, update_actor)
        stream.finish()
        conn.send((metrics, time.perf_counter() - began, agent.actor.state_dict()))


class LearnerProcess:
    """The SAC updates in a child process, so that they run while the trainer collects the window they learn from.

    The child starts from the trainer's agent, optimisers, update generator and buffer. Each round the trainer
    streams the window's transitions one chunk step at a time as they complete; SAC step i of the round reads
    the buffer with the first `streamed_steps(i, ...)` chunk steps of the window added. After the round the
    trainer loads the child's actor back (~0.2 MB; what acts and evaluates), so the next window is played by a
    policy that learnt from this one; the rest (critics, temperature, optimisers, generator: ~10 MB) only when
    the trainer needs it whole, for a checkpoint and at close (`fetch_state`).
    """

    def __init__(self, agent: SacAgent, buffer: ReplayBuffer, generator: torch.Generator, sizes: tuple[int, int, int],
                 sac: DictConfig, gamma: float):
        context = torch.multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        start = {"learner": _learner_state(agent, generator), "buffer": buffer.state_dict()}
        self.process = context.Process(target=_learn, args=(child, sizes, sac, gamma, start),
                                       daemon=True, name="pi0lab-sac-learner")
        self.process.start()
        child.close()

    def start_updates(self, step_sizes: list[int], update_actor: bool = True) -> None:
        """Begin a round; `step_sizes`: the previous window's transitions per chunk step (`streamed_steps`);
        without `update_actor` the round steps the critic only (`sac_updates`)."""
        self.conn.send(("update", (step_sizes, update_actor)))

    def add_step(self, transitions: dict[str, Tensor]) -> None:
        """One chunk step's completed transitions of the window being collected."""
        try:
            self.conn.send(("step", transitions))
        except BrokenPipeError:
            raise self._ended() from None

    def finish_updates(self, actor: NoisePolicy) -> tuple[dict[str, float], float]:
        """End the window, wait for the round of updates, load the learnt actor into `actor`
        -> (metrics, seconds)."""
        try:
            self.conn.send(("end", None))
            metrics, seconds, actor_state = self.conn.recv()
        except (EOFError, BrokenPipeError):
            raise self._ended() from None
        actor.load_state_dict(actor_state)
        return metrics, seconds

    def fetch_state(self, agent: SacAgent, generator: torch.Generator) -> None:
        """Load the child's whole learner state (agent, optimisers, update generator) into `agent` / `generator`."""
        try:
            self.conn.send(("state", None))
            state = self.conn.recv()
        except (EOFError, BrokenPipeError):
            raise self._ended() from None
        _load_learner_state(agent, generator, state)

    def _ended(self) -> RuntimeError:
        self.process.join(timeout=10)
        return RuntimeError(f"the SAC learner process ended (exit code {self.process.exitcode}): see its error above")

    def close(self) -> None:
        if self.process.is_alive():
            self.conn.send(("close", None))
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
        self.conn.close()


# ------------------------------------------------------------------------------------------ trainer


class DSRLTrainer(TrainingLoop):
    """DSRL with the surface of `RLTrainer`: `iterate()`, `run()`, `request_stop()`, `evaluate()`, `save()`,
    resume with `runner.resume_dir` or `resume=True`.

    One iteration: reset every training env, play the window to the end of all episodes (the noise policy
    samples a per chunk step, pi0 runs its ODE from x_1 for the envs still playing), push the transitions, then
    `algorithm.sac.updates_per_iteration` SAC steps on batches of `algorithm.sac.batch_size`. With
    `algorithm.sac.update_during_collection` the updates run in a learner process beside the window instead,
    reading its transitions as they complete (`LearnerProcess`).
    """

    def __init__(self, cfg: DictConfig, device: str | torch.device | None = None, resume: bool | str | None = None,
                 progress: bool = True):
        if cfg.algorithm.adv_type != "embodied_sac":
            raise ValueError(f"DSRLTrainer runs algorithm.adv_type=embodied_sac, got {cfg.algorithm.adv_type!r} "
                             "(PPO / GRPO configs go to RLTrainer)")
        self.device = single_process_device(cfg, device)
        super().__init__(cfg, resume, progress)
        sac = cfg.algorithm.sac
        torch.manual_seed(cfg.actor.seed)
        np.random.seed(cfg.actor.seed)
        self.policy = build_policy(cfg.actor.model, self.device).requires_grad_(False).eval()  # frozen pi0
        self.block = NoiseBlock.for_model(sac, self.policy.model.config)
        self.state_dim = self.policy.norm_stats["state"].dim
        self.agent = SacAgent(self.policy.model.config.vlm.width, self.state_dim, self.block.size, sac,
                              cfg.algorithm.gamma).to(self.device)
        self.buffer = ReplayBuffer(sac.replay_buffer_size, self.device)
        self.collect_generator = torch.Generator(self.device).manual_seed(cfg.actor.seed + 1)
        self.update_generator = torch.Generator(self.device).manual_seed(cfg.actor.seed + 2)
        self.env = EnvRole(cfg.env.train, seed=cfg.runner.seed)
        self.chunk = cfg.actor.model.num_action_chunks
        self.max_chunk_steps = -(-self.env.envs.max_episode_steps // self.chunk)
        self.window_step_sizes = [1] * self.max_chunk_steps  # transitions per chunk step of the last window
        if self.resume_from is not None:
            self._restore(self.resume_from)
        elif sac.normalize_features:
            with torch.no_grad():
                self.agent.set_feature_stats(self.policy.prefill(self.env.reset()).features.float())
        self.learner = None
        if sac.update_during_collection:
            if self.device.type != "cpu":
                raise ValueError("algorithm.sac.update_during_collection runs the SAC updates in a CPU process beside "
                                 f"the collection; on {self.device} set it to false")
            self.learner = LearnerProcess(self.agent, self.buffer, self.update_generator,
                                          (self.policy.model.config.vlm.width, self.state_dim, self.block.size), sac,
                                          cfg.algorithm.gamma)
        self.logger = MetricLogger(self.run_dir, list(cfg.runner.logger.logger_backends), cfg.runner.logger.project_name,
                                   cfg.runner.logger.experiment_name, OmegaConf.to_container(cfg, resolve=True))

    # ------------------------------------------------------------------------------------- acting

    @torch.no_grad()
    def act(self, obs: dict, generator: torch.Generator | None = None, actor: NoisePolicy | None = None
            ) -> dict[str, Tensor]:
        """Env observations -> env actions [N,C,E] (numpy), with the features [N,W], states [N,S] and SAC
        actions [N,D] behind them. generator=None: the policy's mean noise tanh(mean) (deterministic).
        actor: the noise policy to act with (default: the agent's own)."""
        actor = self.agent.actor if actor is None else actor
        cache = self.policy.prefill(obs)
        features = self.agent.normalize_features(cache.features.float())
        states = self.policy.preprocess_state(obs["states"])[:, : self.state_dim]
        if generator is None:
            action = actor.mean_action(features, states)
        else:
            action, _ = actor.sample(features, states, generator)
        out = self.policy.rollout(obs, deterministic=True, noise=self.block.to_noise(action), prefix=cache)
        return {"env_actions": out["actions"].cpu().numpy(), "features": features, "states": states, "actions": action}

    def collect(self, timer: Timer, on_step=None, on_transitions=None
                ) -> tuple[dict[str, Tensor], dict[str, np.ndarray]]:
        """Play one window from reset to the end of every episode -> (transitions of the steps each env was
        still running, each field [M,...], t-major; the envs' final info: success_once / episode_len / return).

        on_transitions(transitions): called with each chunk step's transitions as soon as they are complete
        (after the env step n_step later, or at the window's end), in order; the window's are their concatenation.
        """
        sac, algo = self.cfg.algorithm.sac, self.cfg.algorithm
        with timer("time/env"):
            obs = self.env.reset()
        steps, completed, info = [], [], {}
        running = torch.ones(self.env.num_envs, dtype=torch.bool, device=self.device)  # episode not ended before t
        for _ in range(self.max_chunk_steps):
            with timer("time/rollout"):  # pi0 runs for the envs still playing; the ended ones are frozen
                step = self._act_on_running(obs, running)
            with timer("time/env"):
                obs, rewards, terminated, truncated, info = self.env.step(step.pop("env_actions"))
            if on_step is not None:
                on_step(obs, rewards, info)
            ended = torch.as_tensor((terminated | truncated).any(-1), device=self.device)
            chunk_reward = torch.as_tensor(rewards, dtype=torch.float32, device=self.device).sum(-1)
            step.update(rewards=algo.reward_coef * chunk_reward - sac.step_penalty, dones=ended, running=running)
            steps.append(step)
            running = running & ~ended
            if not running.any():
                break
            completed += self._complete_transitions(steps, len(completed), len(steps) - sac.n_step, on_transitions)
        completed += self._complete_transitions(steps, len(completed), len(steps), on_transitions)
        transitions = {name: torch.cat([piece[name] for piece in completed]) for name in ReplayBuffer.FIELDS}
        return transitions, {k: np.asarray(v) for k, v in info.items()}

    def _act_on_running(self, obs: dict, running: Tensor) -> dict[str, Tensor]:
        """`act` with the collection's generator on the running envs only -> the same fields for all N envs,
        zeros in the rows of the envs that have ended (their transitions are dropped, their actions ignored)."""
        env_ids = running.nonzero().squeeze(1)
        rows = env_ids.cpu().numpy()
        acted = self.act(select_envs(obs, rows), self.collect_generator)
        chosen = acted.pop("env_actions")
        env_actions = np.zeros((self.env.num_envs, *chosen.shape[1:]), dtype=chosen.dtype)
        env_actions[rows] = chosen
        return {name: values.new_zeros(self.env.num_envs, *values.shape[1:]).index_copy_(0, env_ids, values)
                for name, values in acted.items()} | {"env_actions": env_actions}

    def _complete_transitions(self, steps: list[dict], first: int, end: int, on_transitions
                              ) -> list[dict[str, Tensor]]:
        """The transitions of chunk steps [first, end) of the window so far (`steps`), one dict per step.

        Transition t: R_t over n_step chunk steps, bootstrapping from step t+n's observation unless the episode
        ended first (then nothing is bootstrapped and the stored next observation is never read). Step t is
        complete once step t+n has been played (its features: the observation after step t+n-1), or at the end.
        """
        if end <= first:
            return []
        window = {name: torch.stack([step[name] for step in steps]) for name in steps[0]}  # each [T,N,...]
        rewards, dones, next_step = n_step_returns(window["rewards"], window["dones"], self.cfg.algorithm.gamma,
                                                   self.cfg.algorithm.sac.n_step)
        envs = torch.arange(self.env.num_envs, device=self.device)
        pieces = []
        for t in range(first, end):
            keep = window["running"][t]
            piece = {name: window[name][t] for name in ("features", "states", "actions")}
            piece |= {"rewards": rewards[t], "dones": dones[t], "next_features": window["features"][next_step[t], envs],
                      "next_states": window["states"][next_step[t], envs]}
            pieces.append({name: values[keep] for name, values in piece.items()})
            if on_transitions is not None:
                on_transitions(pieces[-1])
        return pieces

    # ------------------------------------------------------------------------------------- loop

    def _one_iteration(self) -> IterationEvent:
        sac = self.cfg.algorithm.sac
        start, timer = time.perf_counter(), Timer()
        update_actor = self.iteration >= sac.critic_warmup_iterations
        recorder = self._recorder("train")
        on_step = recorder.add if recorder else None
        if self.learner is not None:  # the updates run while the agent plays the window they learn from
            step_sizes = []

            def stream(step_transitions: dict[str, Tensor]) -> None:
                step_sizes.append(len(step_transitions["rewards"]))
                self.learner.add_step(step_transitions)

            self.learner.start_updates(self.window_step_sizes, update_actor)
            transitions, info = self.collect(timer, on_step=on_step, on_transitions=stream)
            metrics, timer.totals["time/update"] = self.learner.finish_updates(self.agent.actor)
            self.buffer.add(transitions)
            self.window_step_sizes = step_sizes
        else:
            transitions, info = self.collect(timer, on_step=on_step)
            self.buffer.add(transitions)
            with timer("time/update"):
                metrics = sac_updates(self.agent, self.buffer, sac, self.update_generator, update_actor=update_actor)
        video = recorder.save(f"train_iter_{self.iteration + 1:06d}")[0].read_bytes() if recorder else None
        self.iteration += 1

        metrics = {f"train/sac/{name}": value for name, value in metrics.items()}
        metrics.update({
            "train/replay_buffer/size": float(self.buffer.size),
            "env/success_once": float(info["success_once"].mean()),
            "env/episode_len": float(info["episode_len"].mean()),
            "env/return": float(info["return"].mean()),
            "env/steps": float(info["episode_len"].sum()),
            "rollout/transitions": float(len(transitions["rewards"])),
            "rollout/rewards_mean": float(transitions["rewards"].mean()),
            **timer.totals,
            "time/iteration": time.perf_counter() - start,
        })
        return self._finish_iteration(metrics, video)

    # ------------------------------------------------------------------------------------- evaluation

    def _score(self, envs, num_episodes: int, on_step, on_round) -> EvalResult:
        """Success with the noise policy's mean noise (deterministic) on the pairs `RLTrainer` scores."""
        return evaluate(lambda obs: self.act(obs)["env_actions"], envs, num_episodes, self.chunk, on_step=on_step,
                        on_round=on_round, progress=self.progress, live_only=True)

    # ------------------------------------------------------------------------------------- checkpoints

    def save(self) -> Path:
        """Atomic checkpoint: the agent in model/dsrl_agent.pt; optimisers, replay buffer, every RNG in state.pt."""
        if self.learner is not None:
            self.learner.fetch_state(self.agent, self.update_generator)
        state = {
            "iteration": self.iteration,
            "window_step_sizes": self.window_step_sizes,
            "optimizers": {name: opt.state_dict() for name, opt in self.agent.optimizers().items()},
            "replay_buffer": self.buffer.state_dict(),
            "rng": rng_state(),
            "collect_generator": self.collect_generator.get_state(),
            "update_generator": self.update_generator.get_state(),
            "env_rng": self.env.rng.bit_generator.state,
            "env_vector_rng": self.env.envs.rng.bit_generator.state,
        }

        def save_agent(path: Path) -> None:
            path.mkdir(parents=True)
            torch.save(self.agent.state_dict(), path / AGENT_FILE)

        return save_checkpoint(self.run_dir, self.iteration, state, save_agent)

    def _restore(self, checkpoint: Path) -> None:
        agent_file = checkpoint / "model" / AGENT_FILE
        if not agent_file.is_file():
            raise FileNotFoundError(f"{checkpoint} has no model/{AGENT_FILE}: it is not a DSRL checkpoint")
        saved = torch.load(agent_file, map_location=self.device, weights_only=True)
        for name in ("feature_mean", "feature_std"):  # a checkpoint from before `normalize_features`: the identity
            saved.setdefault(name, getattr(self.agent, name))
        self.agent.load_state_dict(saved)
        state = load_checkpoint_state(checkpoint)
        self.iteration = state["iteration"]
        self.window_step_sizes = state.get("window_step_sizes", self.window_step_sizes)  # older checkpoints: equal
        for name, optimizer in self.agent.optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.buffer.load_state_dict(state["replay_buffer"])
        set_rng_state(state["rng"])
        self.collect_generator.set_state(state["collect_generator"])
        self.update_generator.set_state(state["update_generator"])
        self.env.rng.bit_generator.state = state["env_rng"]
        self.env.envs.rng.bit_generator.state = state["env_vector_rng"]

    def close(self) -> None:
        """End the learner process (its whole state fetched first, so `agent` is complete), release the envs."""
        if self.learner is not None:
            if self.learner.process.is_alive():
                self.learner.fetch_state(self.agent, self.update_generator)
            self.learner.close()
        self.env.close()
        if self._eval_envs is not None:
            self._eval_envs.close()
