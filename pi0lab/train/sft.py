"""Few-shot supervised fine-tuning: flow-matching behaviour cloning from expert demos.

A training sample is (observation at step t, the next H expert actions a_t .. a_{t+H-1}), with H the
model's action horizon. Past the end of an episode the chunk is padded with its last action and
those steps carry no loss. With normalised actions u (zero-padded to the model's action width A),
the loss is the flow-matching MSE over the real action dims and valid steps only:

    L = sum_{b,h,d<E} m_{b,h} (u_target - v_theta)^2_{b,h,d} / sum_{b,h,d<E} m_{b,h}

`sft.demos_per_task` keeps the first k episodes of each task (few-shot); `sft.augment` crops, rotates
and colour-jitters the demo images at every step (`pi0lab.train.augment`). With `sft.ema_decay` = d
the model evaluated and saved is an exponential moving average of the trained weights, updated after
every optimiser step as openpi does (d = 0.99 there):

    theta_avg <- d * theta_avg + (1 - d) * theta

`sft.freeze_vision` keeps the vision tower of the base at `sft.init_path` fixed (what `pi0lab pretrain`
taught it, where things are, is not overwritten by a few demos' gradients); everything else trains.

Normalisation stats come from those demos and are saved with the model, so `pi0lab train` /
`pi0lab eval` can load it. Demos recorded with the tabletop's privileged-state control (`pi0lab demos
--privileged-state`; a control, not pi0) give 8+P-wide state stats; SFT then needs
`env.eval.privileged_state=true` (and `env.train.privileged_state`, which must agree), so that its
evaluation, and later RL from its checkpoint, see the same state layout as the demos.
"""

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from pi0lab.envs.demos import demo_state_layout, read_demo_index, read_demos
from pi0lab.models import Pi0, Pi0Config
from pi0lab.models.checkpoint import load_pi0, save_pi0
from pi0lab.models.normalize import compute_norm_stats, normalize
from pi0lab.models.policy import Pi0Policy
from pi0lab.train.augment import augment_observation
from pi0lab.train.checkpoint import write_atomically
from pi0lab.train.evaluate import EvalResult, evaluate_policy, evaluation_pairs
from pi0lab.train.loggers import MetricLogger
from pi0lab.train.roles import build_envs


@dataclass
class DemoSet:
    """Every step of the chosen demos, flattened: N steps in total."""

    main_images: np.ndarray  # uint8 [N,H,W,3]
    wrist_images: np.ndarray  # uint8 [N,H,W,3]
    states: np.ndarray  # float32 [N,8] (8+P with the privileged-state control)
    action_chunks: np.ndarray  # float32 [N,horizon,7]
    chunk_mask: np.ndarray  # bool [N,horizon]: False past the episode's end
    instructions: list[str]  # [N]
    num_episodes: int
    scenes: set[tuple[int, int]]  # the (task, init state) pairs the demos start from

    def __len__(self) -> int:
        return len(self.states)

    def batch(self, index: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
        """(env-style observation dict, action chunks [B,horizon,7], mask [B,horizon]) of the given steps."""
        obs = {"main_images": self.main_images[index], "wrist_images": self.wrist_images[index],
               "states": self.states[index], "task_descriptions": [self.instructions[i] for i in index]}
        return obs, self.action_chunks[index], self.chunk_mask[index]


def action_chunks(actions: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """actions [T,E] -> chunks [T,horizon,E] (chunk t = a_t .. a_{t+horizon-1}, padded with a_{T-1}) and mask [T,horizon]."""
    steps = len(actions)
    index = np.arange(steps)[:, None] + np.arange(horizon)[None, :]  # [T,horizon]
    return actions[np.minimum(index, steps - 1)], index < steps


def load_demo_set(demo_path: str | Path, demos_per_task: int, horizon: int) -> DemoSet:
    """The first `demos_per_task` successful episodes of every task in a demo directory, in index order."""
    episodes = read_demos(demo_path)
    chosen: dict[int, list[dict]] = {}
    for episode in episodes:
        if len(chosen.setdefault(episode["task_id"], [])) < demos_per_task:
            chosen[episode["task_id"]].append(episode)
    short = {task: len(eps) for task, eps in chosen.items() if len(eps) < demos_per_task}
    if short or not chosen:
        raise ValueError(f"{demo_path} has fewer than sft.demos_per_task={demos_per_task} successful demos for "
                         f"tasks {short or 'all'}; write more with `pi0lab demos --per-task {demos_per_task}`")
    selected = [e for task in sorted(chosen) for e in chosen[task]]
    chunks, masks = zip(*(action_chunks(e["actions"], horizon) for e in selected))
    return DemoSet(
        main_images=np.concatenate([e["main_images"] for e in selected]),
        wrist_images=np.concatenate([e["wrist_images"] for e in selected]),
        states=np.concatenate([e["states"] for e in selected]).astype(np.float32),
        action_chunks=np.concatenate(chunks).astype(np.float32),
        chunk_mask=np.concatenate(masks),
        instructions=[e["instruction"] for e in selected for _ in range(len(e["actions"]))],
        num_episodes=len(selected),
        scenes={(e["task_id"], e["init_state_id"]) for e in selected},
    )


def fresh_model_config(cfg: DictConfig) -> Pi0Config:
    """The preset of `actor.model.size` with the changes of `sft.model`."""
    preset = getattr(Pi0Config, cfg.actor.model.size)()
    changes = cfg.sft.model
    overrides = {}
    if changes.action_horizon is not None:
        overrides["action_horizon"] = changes.action_horizon
    if changes.cameras is not None:
        overrides["cameras"] = tuple(changes.cameras)
    if changes.max_token_len is not None:
        overrides["max_token_len"] = changes.max_token_len
    if changes.patch_size is not None:
        overrides["vision"] = dataclasses.replace(preset.vision, patch_size=changes.patch_size)
    return dataclasses.replace(preset, **overrides)


def masked_flow_loss(elementwise: torch.Tensor, mask: torch.Tensor, action_dim: int) -> torch.Tensor:
    """elementwise [B,H,A] flow-matching loss, mask [B,H] -> mean over valid steps and the first action_dim dims."""
    per_step = elementwise[..., :action_dim].mean(-1)  # [B,H]
    weights = mask.to(per_step.dtype)
    return (per_step * weights).sum() / weights.sum().clamp_min(1.0)


def lr_at(step: int, cfg: DictConfig) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to 10% of `lr` at `num_steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.num_steps - cfg.warmup_steps, 1)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def update_ema(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """In place, parameter by parameter: average <- decay * average + (1 - decay) * model."""
    for avg, param in zip(average.parameters(), model.parameters(), strict=True):
        avg.lerp_(param, 1 - decay)


def initial_model(cfg: DictConfig, config: Pi0Config, demos: DemoSet) -> Pi0:
    """The model SFT starts from: the base at `sft.init_path` with its own normalisation stats (its
    outputs mean what they meant in pretraining; a base that never saw actions, as `pi0lab pretrain`'s,
    has none and takes the demos'), or random weights with stats from the demos."""
    if cfg.sft.init_path is None:
        return with_demo_stats(Pi0(config), demos)
    path = Path(cfg.sft.init_path)
    if not path.exists():
        raise FileNotFoundError(f"sft.init_path={path} does not exist; point it at a pi0lab checkpoint "
                                "(pi0lab sft writes one) or set sft.init_path=null to start from random weights")
    model = load_pi0(path)
    if model.norm_stats is not None and model.norm_stats["state"].dim != demos.states.shape[1]:
        raise ValueError(f"sft.init_path={path} has {model.norm_stats['state'].dim}-wide state stats but the demos' "
                         f"states are {demos.states.shape[1]} wide (privileged-state control on one side only); "
                         "use a base and demos of the same state layout")
    if model.config != config:
        changed = [f.name for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(model.config, f.name)]
        raise ValueError(f"sft.init_path={path} holds a model whose {', '.join(changed)} differ from the one "
                         "actor.model.size and sft.model describe; make them match the checkpoint")
    return model if model.norm_stats is not None else with_demo_stats(model, demos)


def with_demo_stats(model: Pi0, demos: DemoSet) -> Pi0:
    """Set the model's normalisation stats to the demos' states and (first) actions."""
    model.norm_stats = {"state": compute_norm_stats(demos.states), "actions": compute_norm_stats(demos.action_chunks[:, 0])}
    return model


@dataclass
class SftResult:
    checkpoint: Path
    success_rate: float | None  # of the final evaluation (None if evaluation is off)
    evaluations: dict[int, EvalResult] = field(default_factory=dict)  # optimiser step -> result


def run_sft(cfg: DictConfig, progress: bool = True,
            callback: Callable[[int, dict[str, float]], None] | None = None) -> SftResult:
    """Train a pi0 (`actor.model.size`; from `sft.init_path` or random weights; the vision tower fixed
    with `sft.freeze_vision`) on the demos of
    `sft.demo_path`; save it to `sft.save_path`.

    callback(step, metrics) is called after every optimiser step (live plots). Ctrl-C saves the model
    reached so far before it re-raises.
    """
    sft = cfg.sft
    torch.manual_seed(cfg.actor.seed)
    rng = np.random.default_rng(cfg.actor.seed)
    config = fresh_model_config(cfg)
    demos = load_demo_set(sft.demo_path, sft.demos_per_task, config.action_horizon)
    privileged, _ = demo_state_layout(read_demo_index(sft.demo_path))
    if privileged != cfg.env.eval.privileged_state:
        raise ValueError(f"sft.demo_path={sft.demo_path} was recorded with privileged_state={privileged} (states "
                         f"{demos.states.shape[1]} wide) but env.eval.privileged_state={cfg.env.eval.privileged_state}: "
                         f"set env.train.privileged_state={str(privileged).lower()} and env.eval.privileged_state="
                         f"{str(privileged).lower()}, or record demos {'without' if privileged else 'with'} "
                         "--privileged-state")
    model = initial_model(cfg, config, demos)  # before the eval envs: a bad init_path leaves nothing running
    model.vision.requires_grad_(not sft.freeze_vision)
    eval_envs = build_envs(cfg.env.eval, cfg.runner.seed) if sft.eval_interval != 0 else None
    num_eval_episodes = cfg.env.eval.num_episodes or cfg.env.eval.total_num_envs
    if eval_envs is not None and eval_envs.state_dim != demos.states.shape[1]:
        eval_envs.close()
        raise ValueError(f"env.eval ({cfg.env.eval.task_suite_name}) gives {eval_envs.state_dim}-wide states but the "
                         f"demos at sft.demo_path={sft.demo_path} are {demos.states.shape[1]} wide; evaluate on the "
                         "demos' suite with the same env.eval.privileged_state")
    if eval_envs is not None:
        seen = demos.scenes & set(evaluation_pairs(num_eval_episodes, eval_envs.num_tasks, eval_envs.num_init_states,
                                                   eval_envs.init_states))
        if seen:
            eval_envs.close()
            raise ValueError(f"env.eval.num_episodes={num_eval_episodes} would score {len(seen)} scenes the demos were "
                             f"recorded from (e.g. task {min(seen)[0]}, init state {min(seen)[1]}); use fewer "
                             "evaluation episodes or fewer sft.demos_per_task (demos take the last init states)")
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    average = None if sft.ema_decay is None else copy.deepcopy(model).requires_grad_(False)
    evaluated = model if average is None else average  # the model evaluated and saved
    policy = Pi0Policy(evaluated, model.norm_stats, action_chunk=cfg.actor.model.num_action_chunks,
                       action_env_dim=cfg.actor.model.action_dim, num_steps=cfg.actor.model.num_steps,
                       precision=cfg.actor.model.precision, initial_noise=cfg.actor.model.openpi.initial_noise)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=sft.lr, weight_decay=sft.weight_decay)
    logger = MetricLogger(cfg.runner.logger.log_path, list(cfg.runner.logger.logger_backends),
                          cfg.runner.logger.project_name, cfg.runner.logger.experiment_name,
                          OmegaConf.to_container(cfg, resolve=True))
    save_path = Path(sft.save_path)
    result = SftResult(save_path, None)
    if progress:
        print(f"SFT on {demos.num_episodes} demos ({len(demos)} steps), {sum(p.numel() for p in model.parameters()):,} parameters")

    def save() -> None:
        write_atomically(save_path, lambda tmp: save_pi0(evaluated, tmp))

    try:
        bar = tqdm(range(sft.num_steps), desc="sft", disable=not progress)
        for step in bar:
            model.train()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, sft)
            obs, chunks, mask = demos.batch(rng.integers(len(demos), size=sft.batch_size))
            actions = normalize(torch.as_tensor(chunks), model.norm_stats["actions"], pad_to=config.action_dim)
            model_obs = policy.preprocess(obs)
            if sft.augment:
                model_obs = augment_observation(model_obs)
            with policy.autocast():
                elementwise = model.compute_loss(model_obs, actions.to(policy.device))
            loss = masked_flow_loss(elementwise.float(), torch.as_tensor(mask, device=policy.device),
                                    cfg.actor.model.action_dim)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            if average is not None:
                update_ema(average, model, sft.ema_decay)
            metrics = {"sft/loss": loss.item(), "sft/grad_norm": grad_norm.item(), "sft/lr": lr_at(step, sft)}
            done = step + 1
            if eval_envs is not None and (done == sft.num_steps or (sft.eval_interval > 0 and done % sft.eval_interval == 0)):
                evaluation = evaluate_policy(policy, eval_envs, num_eval_episodes,
                                             cfg.runner.seed, progress=progress)
                result.evaluations[done] = evaluation
                metrics["eval/success"] = evaluation.success_rate
                bar.write(f"step {done}: eval success {evaluation.success_rate:.1%}")
            logger.log(metrics, done)
            bar.set_postfix(loss=f"{metrics['sft/loss']:.4f}")
            if callback is not None:
                callback(done, metrics)
    except KeyboardInterrupt:
        save()
        print(f"\ninterrupted: the model so far is saved to {save_path}")
        raise
    finally:
        logger.close()
        if eval_envs is not None:
            eval_envs.close()
    save()
    if result.evaluations:
        result.success_rate = result.evaluations[max(result.evaluations)].success_rate
    return result
