"""The RL trainer: rollout -> advantages -> update, one iteration at a time, stoppable and resumable.

    trainer = RLTrainer(load_config("tabletop_ppo_nano"))
    for event in trainer.iterate():          # one IterationEvent per iteration
        plot(event.metrics)                  # a notebook can stop between iterations: trainer.request_stop()
    trainer.run()                            # the same from a script; Ctrl-C finishes the iteration, saves, stops

Stopping (a stop request, Ctrl-C, or the last iteration) writes a checkpoint; `runner.resume_dir`
(or `resume=True`) continues the same run: iteration counter, weights, optimiser, every RNG.
`TrainingLoop` is that loop, shared with `pi0lab.train.dsrl.DSRLTrainer`.
"""

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
from pi0lab.train.checkpoint import latest_checkpoint, load_checkpoint_state, rng_state, save_checkpoint, set_rng_state
from pi0lab.train.evaluate import EpisodeVideos, EvalResult, evaluate_policy, evaluation_pairs
from pi0lab.train.loggers import MetricLogger
from pi0lab.train.roles import EnvRole, RolloutRole, build_envs, build_policy
from pi0lab.train.rollout import Timer, Trajectory, collect_rollout
from pi0lab.train.update import ActorRole


@dataclass
class IterationEvent:
    iteration: int  # 1-based count of finished iterations
    metrics: dict[str, float]
    video: bytes | None = None  # mp4 of one training episode, when video_cfg.save_video
    checkpoint: Path | None = None
    eval_result: EvalResult | None = None


def single_process_device(cfg: DictConfig, device: str | torch.device | None) -> torch.device:
    """The device of a trainer that runs every role in one process (CUDA when there is one), after checking that
    the config asks for nothing more."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if cfg.actor.model.precision == "bf16" and device.type != "cuda":
        raise ValueError("actor.model.precision=bf16 needs a CUDA device; set actor.model.precision=fp32 on CPU")
    if cfg.cluster.num_nodes != 1 or cfg.cluster.num_devices != 1:
        raise ValueError("this trainer runs the env, rollout and actor roles in one process on one device: set "
                         "cluster.num_nodes=1 cluster.num_devices=1 (placement across devices is not available yet)")
    if cfg.rollout.pipeline_stage_num != 1:
        raise ValueError("rollout.pipeline_stage_num > 1 overlaps env and rollout in separate processes, "
                         "which the single-process trainer does not run; set it to 1")
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
        self._eval_envs = None
        self.resume_from = self._resume_checkpoint(resume)
        if self.resume_from is None and latest_checkpoint(self.run_dir) is not None:
            raise FileExistsError(f"{self.run_dir} already holds a run with checkpoints: resume it (--resume, "
                                  "resume=True) or set runner.logger.log_path to a new directory")

    def _one_iteration(self) -> IterationEvent:
        raise NotImplementedError

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
                                   evaluation_pairs(num_episodes, envs.num_tasks, envs.num_init_states), [0],
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
        try:
            while self.iteration < self.cfg.runner.max_epochs and not self._stop.is_set():
                yield self._one_iteration()
        except GeneratorExit:  # the consumer stopped between iterations: the state is consistent
            self._save_if_new()
            raise
        self._save_if_new()

    def _save_if_new(self) -> None:
        latest = latest_checkpoint(self.run_dir)
        if self.iteration > 0 and (latest is None or latest.name != _step_name(self.iteration)):
            self.save()

    def run(self, label: str = "") -> dict[str, float]:
        """Iterate to the end; the first Ctrl-C finishes the current iteration, saves and stops.
        `label` starts each progress line (to tell runs apart that print side by side)."""
        last: dict[str, float] = {}

        def on_interrupt(signum, frame):
            if self._stop.is_set():
                raise KeyboardInterrupt
            print("\nstopping after this iteration (Ctrl-C again to abort without saving it)", flush=True)
            self._stop.set()

        previous = signal.signal(signal.SIGINT, on_interrupt) if threading.current_thread() is threading.main_thread() else None
        try:
            for event in self.iterate():
                last = event.metrics
                if self.progress:
                    print(label + _summary(event), flush=True)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self.logger.close()
        return last

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
            eval_result = self.evaluate()
            metrics["eval/success"] = eval_result.success_rate
        self.logger.log(metrics, self.iteration)
        checkpoint = None
        if runner.save_interval > 0 and self.iteration % runner.save_interval == 0:
            checkpoint = self.save()
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
        self.run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.cfg, self.run_dir / "config.yaml", resolve=True)

    def _recorder(self, split: str) -> VideoRecorder | None:
        """Records env 0 of a training rollout (one frame per chunk) when save_video is on."""
        video_cfg = self.cfg.env[split].video_cfg
        if not video_cfg.save_video:
            return None
        return VideoRecorder([0], video_cfg.video_base_dir, info_on_video=video_cfg.info_on_video, with_wrist=True)


class RLTrainer(TrainingLoop):
    def __init__(self, cfg: DictConfig, device: str | torch.device | None = None, resume: bool | str | None = None,
                 progress: bool = True):
        self.device = single_process_device(cfg, device)
        super().__init__(cfg, resume, progress)
        resume_from = self.resume_from
        torch.manual_seed(cfg.actor.seed)
        np.random.seed(cfg.actor.seed)
        self.policy = build_policy(cfg.actor.model, self.device, override_path=resume_from and resume_from / "model")
        self.rollout_generator = torch.Generator(self.device).manual_seed(cfg.actor.seed + 1)
        self.actor_generator = torch.Generator().manual_seed(cfg.actor.seed + 2)
        algo = cfg.algorithm
        self.env = EnvRole(cfg.env.train, seed=cfg.runner.seed, group_size=algo.group_size if algo.adv_type == "grpo" else 1)
        self.rollout = RolloutRole(self.policy, self.rollout_generator)
        self.actor = ActorRole(self.policy, cfg.actor, algo, self.actor_generator)
        self.chunk = cfg.actor.model.num_action_chunks
        self.max_chunk_steps = -(-self.env.envs.max_episode_steps // self.chunk)
        if resume_from is not None:
            self._restore(load_checkpoint_state(resume_from))
        self.logger = MetricLogger(self.run_dir, list(cfg.runner.logger.logger_backends), cfg.runner.logger.project_name,
                                   cfg.runner.logger.experiment_name, OmegaConf.to_container(cfg, resolve=True))

    def _one_iteration(self) -> IterationEvent:
        algo = self.cfg.algorithm
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        video = None
        trajectories: list[tuple[Trajectory, Advantages]] = []
        timer = Timer()
        for epoch in range(algo.rollout_epoch):
            recorder = self._recorder("train") if epoch == 0 else None
            trajectory, times = collect_rollout(self.env, self.rollout, self.max_chunk_steps,
                                                on_step=recorder.add if recorder else None)
            for name, seconds in times.items():
                timer.totals[name] = timer.totals.get(name, 0.0) + seconds
            if recorder is not None:
                video = recorder.save(f"train_iter_{self.iteration + 1:06d}")[0].read_bytes()
            trajectories.append((trajectory, self.advantages(trajectory)))
        with timer("time/update"):
            update_metrics = [self.actor.update(traj, adv, self.iteration) for traj, adv in trajectories]
        self.rollout.sync_weights(self.actor.state_dict_for_rollout())
        self.iteration += 1

        metrics.update(_mean_dicts(update_metrics))
        metrics.update(_rollout_metrics(trajectories))
        metrics.update(timer.totals)
        env_steps = sum(int(t.episode_info["episode_len"].sum()) for t, _ in trajectories)
        metrics["time/iteration"] = time.perf_counter() - start
        metrics["env/steps"] = float(env_steps)
        metrics["env/steps_per_second"] = env_steps / max(timer.totals.get("time/env", 0) + timer.totals.get("time/rollout", 0), 1e-9)
        return self._finish_iteration(metrics, video)

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

    def _score(self, envs, num_episodes: int, on_step, on_round) -> EvalResult:
        """The current policy with the ODE sampler (`TrainingLoop.evaluate` picks the pairs)."""
        return evaluate_policy(self.policy, envs, num_episodes, self.cfg.runner.seed, on_step=on_step,
                               on_round=on_round, progress=self.progress)

    # ------------------------------------------------------------------------------------- checkpoints

    def save(self) -> Path:
        """Write an atomic checkpoint of the whole run state at the current iteration."""
        state = {
            "iteration": self.iteration,
            "optimizer": self.actor.optimizer.state_dict(),
            "rng": rng_state(),
            "rollout_generator": self.rollout_generator.get_state(),
            "actor_generator": self.actor_generator.get_state(),
            "env_rng": self.env.rng.bit_generator.state,
            "env_vector_rng": self.env.envs.rng.bit_generator.state,
        }
        return save_checkpoint(self.run_dir, self.iteration, state, lambda path: save_pi0(self.policy.model, path))

    def _restore(self, state: dict) -> None:
        self.iteration = state["iteration"]
        self.actor.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.rollout_generator.set_state(state["rollout_generator"])
        self.actor_generator.set_state(state["actor_generator"])
        self.env.rng.bit_generator.state = state["env_rng"]
        self.env.envs.rng.bit_generator.state = state["env_vector_rng"]

    def close(self) -> None:
        self.env.close()
        if self._eval_envs is not None:
            self._eval_envs.close()


def _step_name(iteration: int) -> str:
    return f"step_{iteration:06d}"


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
