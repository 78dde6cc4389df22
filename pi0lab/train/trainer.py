"""The RL trainer: rollout -> advantages -> update, one iteration at a time, stoppable and resumable.

    trainer = RLTrainer(load_config("tabletop_ppo_nano"))
    for event in trainer.iterate():          # one IterationEvent per iteration
        plot(event.metrics)                  # a notebook can stop between iterations: trainer.request_stop()
    trainer.run()                            # the same from a script; Ctrl-C finishes the iteration, saves, stops

Stopping (a stop request, Ctrl-C, or the last iteration) writes a checkpoint; `runner.resume_dir`
(or `resume=True`) continues the same run: iteration counter, weights, optimiser, every RNG.
`TrainingLoop` is that loop, shared with `pi0lab.train.dsrl.DSRLTrainer`.
"""

import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pi0lab.envs.video import VideoRecorder
from pi0lab.models.checkpoint import save_pi0
from pi0lab.train.advantages import Advantages, gae_advantages, grpo_advantages
from pi0lab.runtime.plan import plan_run
from pi0lab.runtime.spans import flush_spans, span, start_spans
from pi0lab.runtime.world import World
from pi0lab.train.checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint_state, rng_state,
                                     save_checkpoint, set_rng_state)
from pi0lab.train.evaluate import EpisodeVideos, EvalResult, evaluate_policy, evaluation_pairs
from pi0lab.train.loggers import MetricLogger
from pi0lab.train.roles import EnvRole, RolloutRole, build_envs, build_policy
from pi0lab.train.rollout import Timer, Trajectory, collect_rollouts, concat_trajectories
from pi0lab.train.slices import EnvSlices, RemoteEnvSlice, serve_env_slices
from pi0lab.train.update import ActorRole

ENV_SEED_STRIDE = 10_000  # env slice k draws its tasks and inits from runner.seed + k * stride


@dataclass
class IterationEvent:
    iteration: int  # 1-based count of finished iterations
    metrics: dict[str, float]
    video: bytes | None = None  # mp4 of one training episode, when video_cfg.save_video
    checkpoint: Path | None = None
    eval_result: EvalResult | None = None


def single_process_device(cfg: DictConfig, device: str | torch.device | None) -> torch.device:
    """The device of a trainer that runs every role in one process (CUDA when there is one), after checking that
    the config places nothing in other processes."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.actor.model.precision == "bf16" and device.type != "cuda":
        raise ValueError("actor.model.precision=bf16 needs a CUDA device; set actor.model.precision=fp32 on CPU")
    plan = plan_run(cfg)
    if plan.world_size != 1:
        raise ValueError(f"cluster.component_placement places {plan.world_size} processes:\n{plan.describe()}\n"
                         "start it with `pi0lab train` or pi0lab.train.make_trainer (the placed runtime)")
    return device


class TrainingLoop:
    """What every trainer shares: the iteration loop, stopping (request, Ctrl-C), the run directory and resuming.

    A subclass builds its parts after `super().__init__` (`self.resume_from` is the checkpoint to restore, or
    None), sets `self.logger`, and implements `_one_iteration() -> IterationEvent`, `save() -> Path` and
    `_score(envs, num_episodes, on_step, on_round) -> EvalResult` (its deterministic policy on the fixed pairs).
    """

    def __init__(self, cfg: DictConfig, resume: bool | str | None, progress: bool):
        self.cfg = cfg
        self.run_dir = Path(cfg.runner.logger.log_path)
        self.progress = progress
        self._stop = threading.Event()
        self.iteration = 0
        self._saved_iteration = 0  # the iteration of the newest checkpoint this run wrote or resumed from
        self._eval_envs = None
        self.logger: MetricLogger | None = None
        self.resume_from = self._resume_checkpoint(resume)
        if self.resume_from is None and latest_checkpoint(self.run_dir) is not None:
            raise FileExistsError(f"{self.run_dir} already holds a run with checkpoints: resume it (--resume, "
                                  "resume=True) or set runner.logger.log_path to a new directory")

    def _one_iteration(self) -> IterationEvent:
        raise NotImplementedError

    def _stop_requested(self) -> bool:
        """Whether to stop before the next iteration (a placed run decides it for all its processes at once)."""
        return self._stop.is_set()

    def _score(self, envs, num_episodes: int, on_step, on_round) -> EvalResult:
        raise NotImplementedError

    def save(self) -> Path:
        raise NotImplementedError

    def evaluate(self, num_episodes: int | None = None) -> EvalResult:
        """The deterministic policy's success on the fixed (task, init) pairs of `env.eval`; with save_video, the
        episodes env 0 plays (one per round) go to `eval_iter_<iteration>_task<t>_init<i>.mp4`."""
        split = self.cfg.env.eval
        if self._eval_envs is None:
            self._eval_envs = build_envs(split, seed=self.cfg.runner.seed)
        envs = self._eval_envs
        num_episodes = num_episodes or split.num_episodes or split.total_num_envs
        videos = None
        if split.video_cfg.save_video:
            videos = EpisodeVideos(split.video_cfg.video_base_dir, f"eval_iter_{self.iteration:06d}",
                                   evaluation_pairs(num_episodes, envs.num_tasks, envs.num_init_states, envs.init_states), [0],
                                   info_on_video=split.video_cfg.info_on_video)
        result = self._score(envs, num_episodes, videos and videos.add, videos and videos.start_round)
        if videos is not None:
            videos.finish()
            result.videos = videos.paths
        return result

    # ------------------------------------------------------------------------------------- loop

    def iterate(self) -> Iterator[IterationEvent]:
        """Run iterations until `runner.max_epochs` or a stop request; yield one event after each."""
        self._write_config()
        self._saved_iteration = max(self._saved_iteration, self.iteration)  # a resumed state is its checkpoint
        try:
            while self.iteration < self.cfg.runner.max_epochs and not self._stop_requested():
                yield self._one_iteration()
        except GeneratorExit:  # the consumer stopped between iterations: the state is consistent
            self._save_if_new()
            raise
        self._save_if_new()

    def _save_if_new(self) -> None:
        if self.iteration > self._saved_iteration:
            self._checkpoint()

    def _checkpoint(self) -> Path | None:
        with span("checkpoint"):
            path = self.save()
        self._saved_iteration = self.iteration
        return path

    def run(self, label: str = "") -> dict[str, float]:
        """Iterate to the end; the first Ctrl-C finishes the current iteration, saves and stops.
        `label` starts each progress line (to tell runs apart that print side by side)."""
        try:
            return run_with_ctrl_c(self.iterate(), self._stop.is_set, self.request_stop, self.progress, label)
        finally:
            if self.logger is not None:
                self.logger.close()

    def request_stop(self) -> None:
        """Stop after the iteration in progress (safe from another thread, e.g. a notebook button)."""
        self._stop.set()

    def _finish_iteration(self, metrics: dict[str, float], video: bytes | None) -> IterationEvent:
        """After `self.iteration` was counted: evaluate when `runner.val_check_interval` says, log, checkpoint
        when `runner.save_interval` says."""
        runner = self.cfg.runner
        eval_result = None
        if runner.val_check_interval > 0 and (self.iteration % runner.val_check_interval == 0
                                              or self.iteration == runner.max_epochs):
            with span("eval"):
                eval_result = self.evaluate()
            if eval_result is not None:
                metrics["eval/success"] = eval_result.success_rate
        if self.logger is not None:
            self.logger.log(metrics, self.iteration)
        checkpoint = None
        if runner.save_interval > 0 and self.iteration % runner.save_interval == 0:
            checkpoint = self._checkpoint()
        flush_spans()
        return IterationEvent(self.iteration, metrics, video, checkpoint, eval_result)

    def _resume_checkpoint(self, resume: bool | str | None) -> Path | None:
        source = resume if isinstance(resume, str) else self.cfg.runner.resume_dir
        if source is None and resume is True:
            source = str(self.run_dir)
        if source is None:
            return None
        checkpoint = latest_checkpoint(source) if (Path(source) / "checkpoints").is_dir() else Path(source)
        if checkpoint is None or not (checkpoint / "state.pt").is_file():
            raise FileNotFoundError(f"nothing to resume in {source}: no checkpoints/latest and no state.pt")
        return checkpoint

    def _write_config(self) -> None:
        if self.logger is None:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.cfg, self.run_dir / "config.yaml", resolve=True)

    def _recorder(self, split: str) -> VideoRecorder | None:
        """Records env 0 of this iteration's rollout (one frame per chunk) when save_video is on and the
        iteration is one of every `video_cfg.interval`th (the first, then each interval-th)."""
        video_cfg = self.cfg.env[split].video_cfg
        if not video_cfg.save_video or self.iteration % video_cfg.interval:
            return None
        return VideoRecorder([0], video_cfg.video_base_dir, info_on_video=video_cfg.info_on_video, with_wrist=True)


class RLTrainer(TrainingLoop):
    """PPO / GRPO in one process, or one process of a placed run (`world`: its roles and process groups).

    One process (no `world`) is the placed runtime's collocated case on one device: the env, rollout and
    actor roles share the process, the rollout uses the actor's module, and every collective is a no-op.
    """

    def __init__(self, cfg: DictConfig, device: str | torch.device | None = None, resume: bool | str | None = None,
                 progress: bool = True, world: World | None = None):
        if world is None:
            self.device = single_process_device(cfg, device)
            world = World.single(plan_run(cfg), self.device)
            start_spans(Path(cfg.runner.logger.log_path) / "spans" / "rank_000.jsonl", world.name(), 0)
        self.device = world.device
        self.world = world
        super().__init__(cfg, resume, progress and world.is_logger)
        resume_from = self.resume_from
        plan, algo = world.plan, cfg.algorithm
        torch.manual_seed(cfg.actor.seed)
        np.random.seed(cfg.actor.seed)
        self.policy = None
        if world.has("rollout") or world.has("actor"):
            self.policy = build_policy(cfg.actor.model, self.device, override_path=resume_from and resume_from / "model")
        rollout_index = plan.rollout_ranks.index(world.rank) if world.has("rollout") else 0
        self.rollout_generator = torch.Generator(self.device).manual_seed(cfg.actor.seed + 1 + 1000 * rollout_index)
        self.actor_generator = torch.Generator().manual_seed(cfg.actor.seed + 2)
        group_size = algo.group_size if algo.adv_type == "grpo" else 1
        self.envs: dict[int, EnvRole] = {}  # slice index -> this process's envs of that slice
        if world.has("env"):
            env_index = plan.env_ranks.index(world.rank)
            for stage in range(plan.num_stages):
                for piece in plan.slices_of_env(env_index, stage):
                    split = cfg.env.train.copy()
                    split.total_num_envs = piece.size
                    self.envs[piece.index] = EnvRole(split, seed=cfg.runner.seed + ENV_SEED_STRIDE * piece.index,
                                                     group_size=group_size)
        self.env_server = EnvSlices(world, self.envs) if world.has("env") and not world.has("rollout") else None
        self.rollout = RolloutRole(self.policy, self.rollout_generator) if world.has("rollout") else None
        self.served = []  # the env slices this rollout process acts for: its own envs, or remote ones
        if world.has("rollout"):
            self.served = [self.envs[p.index] if p.index in self.envs else RemoteEnvSlice(world, p)
                           for p in plan.slices_of_rollout(plan.rollout_ranks.index(world.rank))]
        self.actor = ActorRole(self.policy, cfg.actor, algo, self.actor_generator, world) if world.has("actor") else None
        self.chunk = cfg.actor.model.num_action_chunks
        max_episode_steps = world.broadcast_from_env(
            next(iter(self.envs.values())).envs.max_episode_steps if self.envs else None)
        self.max_chunk_steps = -(-max_episode_steps // self.chunk)
        if resume_from is not None:
            self._restore(load_checkpoint_state(resume_from))
        if world.is_logger:
            self.logger = MetricLogger(self.run_dir, list(cfg.runner.logger.logger_backends),
                                       cfg.runner.logger.project_name, cfg.runner.logger.experiment_name,
                                       OmegaConf.to_container(cfg, resolve=True))
        world.barrier()  # nobody writes into the run directory before every process has checked it

    @property
    def env(self) -> EnvRole:
        """The envs of a process that holds one slice (the single-process trainer)."""
        if len(self.envs) != 1:
            raise AttributeError(f"this process holds {len(self.envs)} env slices; use `envs`")
        return next(iter(self.envs.values()))

    def _stop_requested(self) -> bool:
        return self.world.any(self._stop.is_set() or self.world.stop_signalled())

    def _one_iteration(self) -> IterationEvent:
        algo, world = self.cfg.algorithm, self.world
        start = time.perf_counter()
        video = None
        trajectories: list[tuple[Trajectory, Advantages]] = []
        timer = Timer()
        for epoch in range(algo.rollout_epoch):
            recorder = self._recorder("train") if epoch == 0 and world.is_logger and 0 in self.envs else None
            local, times = self._collect(recorder.add if recorder else None)
            if recorder is not None:
                video = recorder.save(f"train_iter_{self.iteration + 1:06d}")[0].read_bytes()
            if world.has("rollout") or world.has("actor"):
                # a process without a rollout mostly waits here for the rollouts' windows
                with timer("time/exchange", "exchange" if world.has("rollout") else "exchange wait"):
                    parts = world.exchange((local, times))
                for name in ("time/env", "time/rollout", "time/window"):  # the slowest rollout process sets the pace
                    timer.totals[name] = timer.totals.get(name, 0.0) + max(t.get(name, 0.0) for _, t in parts)
            if world.has("actor"):
                pieces = sorted((k, traj) for part, _ in parts for k, traj in part)
                trajectory = concat_trajectories([traj for _, traj in pieces])
                trajectories.append((trajectory, self.advantages(trajectory)))
        update_metrics = []
        if world.has("actor"):
            with timer("time/update"):
                update_metrics = [self.actor.update(traj, adv, self.iteration) for traj, adv in trajectories]
        if self.policy is not None and not (world.has("rollout") and world.has("actor")):
            with timer("time/weight_sync"):  # collocated rollouts already hold the actor's module
                world.broadcast_weights(self.actor_trainable(), self.iteration + 1)
        self.iteration += 1

        metrics: dict[str, float] = {}
        if world.is_logger:
            metrics.update(_mean_dicts(update_metrics))
            metrics.update(_rollout_metrics(trajectories))
            metrics.update(timer.totals)
            env_steps = sum(int(t.episode_info["episode_len"].sum()) for t, _ in trajectories)
            metrics["time/iteration"] = time.perf_counter() - start
            metrics["env/steps"] = float(env_steps)
            metrics["env/steps_per_second"] = env_steps / max(timer.totals["time/window"], 1e-9)  # rollout throughput
            if self.device.type == "cuda":  # this process's peak (actor rank 0, with what it is fused with)
                metrics["memory/gpu_peak_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        return self._finish_iteration(metrics, video)

    def _collect(self, on_step) -> tuple[list[tuple[int, Trajectory]], dict[str, float]]:
        """This process's part of one rollout window: (slice index, trajectory) pairs for a rollout process,
        nothing for an env process (it steps its envs for remote rollouts until they end the window)."""
        world = self.world
        if not world.has("rollout"):
            if self.env_server is not None:
                serve_env_slices(world, self.env_server)
            return [], {}
        start = time.perf_counter()
        trajectories, times = collect_rollouts(self.served, self.rollout, self.max_chunk_steps, on_step=on_step)
        world.flush()
        times["time/window"] = time.perf_counter() - start
        served = self.world.plan.slices_of_rollout(self.world.plan.rollout_ranks.index(self.world.rank))
        return [(p.index, traj) for p, traj in zip(served, trajectories)], times

    def actor_trainable(self) -> list[torch.nn.Parameter]:
        """The weights that change in training, in a fixed order (what weight sync sends)."""
        return [p for p in self.policy.parameters() if p.requires_grad]

    def advantages(self, trajectory: Trajectory) -> Advantages:
        """GAE (PPO) or group advantages (GRPO) of one rollout window, as `algorithm` sets them."""
        algo = self.cfg.algorithm
        rewards = trajectory.rewards * algo.reward_coef
        if algo.adv_type == "gae":
            return gae_advantages(rewards, trajectory.dones, trajectory.values, algo.gamma, algo.gae_lambda,
                                  algo.normalize_advantages)
        return grpo_advantages(rewards, trajectory.dones, algo.group_size, algo.filter_rewards,
                               algo.rewards_lower_bound, algo.rewards_upper_bound)

    # ------------------------------------------------------------------------------------- evaluation

    def evaluate(self, num_episodes: int | None = None) -> EvalResult | None:
        """The logging process scores the policy (other processes of a placed run return None)."""
        return super().evaluate(num_episodes) if self.world.is_logger else None

    def _score(self, envs, num_episodes: int, on_step, on_round) -> EvalResult:
        """The current policy with the ODE sampler (`TrainingLoop.evaluate` picks the pairs)."""
        return evaluate_policy(self.policy, envs, num_episodes, self.cfg.runner.seed, on_step=on_step,
                               on_round=on_round, progress=self.progress)

    # ------------------------------------------------------------------------------------- checkpoints

    def save(self) -> Path | None:
        """Write an atomic checkpoint of the whole run state at the current iteration: the logging process
        writes the model, its optimiser and every process's RNG and env streams (gathered to it)."""
        optimizer = self.actor.optimizer_state() if self.actor is not None else None  # fsdp2: every actor gathers
        states = self.world.gather_to_logger(self._process_state())
        if not self.world.is_logger:
            return None
        state = {
            "iteration": self.iteration,
            "optimizer": optimizer,
            "placement": self.world.plan.describe(),
            "data_parallel": self.cfg.actor.data_parallel,
            "processes": states,
        }
        return save_checkpoint(self.run_dir, self.iteration, state, lambda path: save_pi0(self.policy.model, path))

    def _process_state(self) -> dict:
        return {
            "rng": rng_state(),
            "rollout_generator": self.rollout_generator.get_state(),
            "actor_generator": self.actor_generator.get_state(),
            "envs": {k: (env.rng.bit_generator.state, env.envs.rng.bit_generator.state) for k, env in self.envs.items()},
        }

    def _restore(self, state: dict) -> None:
        placement = self.world.plan.describe()
        if state.get("placement") != placement:
            raise CheckpointError(f"{self.resume_from} was written by a run placed as\n{state.get('placement')}\nbut this "
                                  f"run is placed as\n{placement}\nresume with the same cluster.num_devices and "
                                  "cluster.component_placement")
        written = state.get("data_parallel", "ddp")
        if written != self.cfg.actor.data_parallel:
            raise CheckpointError(f"{self.resume_from} holds the optimiser state of actor.data_parallel={written}, but "
                                  f"this run sets actor.data_parallel={self.cfg.actor.data_parallel}: resume with "
                                  f"actor.data_parallel={written}")
        self.iteration = state["iteration"]
        if self.actor is not None:
            self.actor.load_optimizer_state(state["optimizer"])
        mine = state["processes"][self.world.rank]
        set_rng_state(mine["rng"])
        self.rollout_generator.set_state(mine["rollout_generator"])
        self.actor_generator.set_state(mine["actor_generator"])
        for k, (env_rng, vector_rng) in mine["envs"].items():
            self.envs[k].rng.bit_generator.state = env_rng
            self.envs[k].envs.rng.bit_generator.state = vector_rng

    def reseed(self, seed: int) -> None:
        """Start every random stream of the run afresh from `seed` (global RNGs, rollout and actor generators, the
        envs' task / init draws): a run copied from another's checkpoint (population-based training) then
        explores on its own instead of replaying its source."""
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.rollout_generator.manual_seed(seed + 1)
        self.actor_generator.manual_seed(seed + 2)
        for k, env in self.envs.items():
            env.rng = np.random.default_rng([seed, k, 1])
            env.envs.rng = np.random.default_rng([seed, k, 2])

    def close(self) -> None:
        if self.env_server is not None:
            self.env_server.close()  # its envs and rings
        else:
            for env in self.envs.values():
                env.close()
        for piece in self.served:
            if isinstance(piece, RemoteEnvSlice):
                piece.close()
        if self._eval_envs is not None:
            self._eval_envs.close()


def run_with_ctrl_c(events, stopping, request_stop, progress: bool, label: str = "") -> dict[str, float]:
    """Consume a trainer's events, printing a line per iteration; the first Ctrl-C calls `request_stop()` (the
    iteration finishes and checkpoints), a second one raises KeyboardInterrupt. Returns the last metrics."""
    last: dict[str, float] = {}

    def on_interrupt(signum, frame):
        if stopping():
            raise KeyboardInterrupt
        print("\nstopping after this iteration (Ctrl-C again to abort without saving it)", flush=True)
        request_stop()

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if main else None
    try:
        for event in events:
            last = event.metrics
            if progress:
                print(label + _summary(event), flush=True)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return last


def _mean_dicts(dicts: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for d in dicts for k in d}
    return {k: float(np.mean([d[k] for d in dicts if k in d])) for k in keys}


def _rollout_metrics(trajectories: list[tuple[Trajectory, Advantages]]) -> dict[str, float]:
    """The seed's rollout/env metrics, averaged over the envs of every rollout epoch."""
    info = {k: np.concatenate([t.episode_info[k] for t, _ in trajectories]) for k in ("success_once", "episode_len", "return")}
    advantages = torch.cat([adv.advantages[adv.mask] for _, adv in trajectories])
    returns = [adv.returns[adv.mask] for _, adv in trajectories if adv.returns is not None]
    metrics = {
        "env/success_once": float(info["success_once"].mean()),
        "env/episode_len": float(info["episode_len"].mean()),
        "env/return": float(info["return"].mean()),
        "rollout/advantages_mean": float(advantages.mean()) if advantages.numel() else 0.0,
        "rollout/returns_mean": float(torch.cat(returns).mean()) if returns else float(info["return"].mean()),
        "rollout/kept_groups": float(np.mean([adv.kept_groups for _, adv in trajectories])),
    }
    return metrics


def _summary(event: IterationEvent) -> str:
    m = event.metrics
    parts = [f"iter {event.iteration:4d}", f"success {m['env/success_once']:.2f}"]
    for name, label in (("actor/loss", "loss"), ("actor/approx_kl", "kl"), ("train/sac/critic_loss", "critic"),
                        ("train/sac/alpha", "alpha"), ("eval/success", "eval")):
        if name in m:
            parts.append(f"{label} {m[name]:.3f}")
    parts.append(f"{m['time/iteration']:.1f}s")
    return " | ".join(parts)
