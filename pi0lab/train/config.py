"""Training configs: YAML files with `${...}` interpolation, checked against a typed schema.

The schema is the set of dataclasses below (the one place each key, its type and default live).
Group and key names follow the reference recipe (DESIGN §8): `cluster`, `runner`, `algorithm`,
`env.train` / `env.eval`, `rollout`, `actor` (with `actor.model.openpi`), `sft`, and `pretrain` (the vision
tower's localisation pretraining).

    cfg = load_config("tabletop_ppo_nano", ["algorithm.update_epoch=2", "env.train.total_num_envs=16"])
    cfg.algorithm.gamma  # typed attribute access (an OmegaConf DictConfig backed by the schema)

Everything is checked before any work starts: unknown keys (with the closest valid name), wrong types,
values outside their choices, and values that contradict each other (`check_consistency`).
"""

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from pi0lab.choices import InitialNoise, LogprobReduction, Precision
from pi0lab.envs import ACTION_DIM as ENV_ACTION_DIM  # every env behind the contract takes 7-D actions
from pi0lab.train.loggers import LOGGER_BACKENDS

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type, or contradicts another key."""


@dataclass
class ClusterConfig:
    num_nodes: int = 1
    num_devices: int = 1  # devices per node (GPUs, or CPU slots on a CPU-only machine)
    # component names -> device sets; an override replaces the whole mapping (it is not merged)
    component_placement: dict[str, str] = field(default_factory=lambda: {"actor,env,rollout": "all"})


@dataclass
class LoggerConfig:
    log_path: str = "runs"
    project_name: str = "pi0lab"
    experiment_name: str = "default"
    logger_backends: list[str] = field(default_factory=lambda: ["tensorboard"])


@dataclass
class RunnerConfig:
    task_type: Literal["embodied"] = "embodied"
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    max_epochs: int = 100  # RL iterations (rollout + update)
    save_interval: int = 10  # iterations between checkpoints (-1: only at the end / on interrupt)
    val_check_interval: int = 10  # iterations between evaluations (-1: never)
    resume_dir: str | None = None  # a run directory to resume from
    seed: int = 0


@dataclass
class SacConfig:
    """DSRL (algorithm.adv_type = loss_type = embodied_sac): SAC learns pi0's initial noise x_1, pi0 frozen.

    The noise policy sets the block x_1[:noise_horizon, :noise_dims] = noise_bound * tanh(u); the rest of
    x_1 is 0 (pi0lab.train.dsrl). Discounting uses algorithm.gamma, rewards algorithm.reward_coef.
    """

    # the block of x_1 that the noise policy sets: the first noise_horizon steps, the first noise_dims dims of each
    noise_horizon: int = "${actor.model.num_action_chunks}"  # type: ignore[assignment]
    noise_dims: int = "${actor.model.action_dim}"  # type: ignore[assignment]
    noise_bound: float = 1.5  # |x_1| of the block stays below this (N(0,1) has 87% of its mass inside 1.5)
    num_q_heads: int = 10  # critic ensemble size
    critic_layer_norm: bool = False  # LayerNorm after each hidden layer of every Q head (DroQ / RLPD)
    target_q_heads: int = 2  # the TD target takes the minimum over this many random heads (REDQ)
    latent_dim: int = 64  # width of the prefix-feature and the state encoders
    # z-score pi0's prefix features per dim with the mean / std over the first reset's envs (fixed for the run,
    # saved with the agent): the scenes of a task differ by ~0.08 a dim around a shared mean of norm ~1.5
    normalize_features: bool = False
    hidden_dims: list[int] = field(default_factory=lambda: [128, 128, 128])  # MLPs of actor and each Q head
    actor_lr: float = 1.0e-4
    critic_lr: float = 3.0e-4
    alpha_lr: float = 3.0e-4
    initial_alpha: float = 1.0
    # the fresh noise policy's std of u (a = tanh(u), its mean 0): 1 draws x_1 with std ~0.94 at noise_bound 1.5
    initial_std: float = 1.0
    target_entropy: float | None = None  # null: -D/2 for D = noise_horizon * noise_dims (the reference's -16 for 32)
    # the TD target's -alpha log pi term (standard SAC). Off as in the reference: an episode ends at success, so a
    # positive entropy return per chunk step would pay the policy for taking longer
    backup_entropy: bool = False
    # the TD target sums this many chunk steps' rewards before bootstrapping from the state n steps on
    # (1: one-step SAC, the reference; n >= the episode's chunk steps: Monte Carlo returns)
    n_step: int = 1
    tau: float = 0.005  # target critic: theta' <- (1 - tau) theta' + tau theta after each gradient step
    batch_size: int = 512
    replay_buffer_size: int = 15000  # transitions kept (chunk steps); the oldest go first
    updates_per_iteration: int = 200  # gradient steps after each collected window
    # critic steps per actor (and temperature) step: TD3's delayed policy update, RLinf's critic_actor_ratio
    critic_actor_ratio: int = 1
    # the first N iterations' rounds step the critic (and its target) only: the actor keeps its start (mean x_1 = 0)
    # and explores with it until the critic has seen N windows
    critic_warmup_iterations: int = 0
    # run each window's SAC updates in a second process while the window is collected, the window's transitions
    # streamed to it as they complete (one torch thread each, OMP_NUM_THREADS=1: they take a core each)
    update_during_collection: bool = False
    learning_starts: int = 0  # no gradient step until the buffer holds this many transitions (the policy explores)
    step_penalty: float = 0.0  # subtracted from every chunk step's reward (favours finishing sooner)


@dataclass
class AlgorithmConfig:
    adv_type: Literal["gae", "grpo", "embodied_sac"] = "gae"
    loss_type: Literal["actor_critic", "actor", "embodied_sac"] = "actor_critic"
    group_size: int = 1  # GRPO: envs per group sharing task + initial state
    normalize_advantages: bool = True
    rollout_epoch: int = 1  # rollouts collected per iteration
    update_epoch: int = 4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float | None = 3.0  # dual clip for negative advantages (null: off)
    value_clip: float = 0.2
    huber_delta: float | None = 10.0
    entropy_bonus: float = 0.0
    kl_beta: float = 0.0  # k3 KL penalty towards the rollout policy (0: off)
    target_kl: float | None = None  # KL guard: stop the epoch loop once approx_kl exceeds this
    reward_coef: float = 1.0
    filter_rewards: bool = False  # GRPO: drop groups whose mean score is outside the bounds
    rewards_lower_bound: float = 0.1
    rewards_upper_bound: float = 0.9
    sac: SacConfig = field(default_factory=SacConfig)


@dataclass
class VideoConfig:
    save_video: bool = False
    info_on_video: bool = True
    video_base_dir: str = "${runner.logger.log_path}/video"
    num_videos: int = 1  # envs recorded per rollout
    # training: record the rollout of every interval-th iteration (1: each; a video costs ~0.25 s of the
    # 2-core machine, ~6% of a DSRL iteration); evaluation records every scored episode
    interval: int = 1


@dataclass
class EnvSplitConfig:
    task_suite_name: str = "tabletop_spatial"
    total_num_envs: int = 8
    max_episode_steps: int | None = None  # null: the suite's own limit
    image_size: int = 64
    group_size: int = 1
    num_episodes: int | None = None  # evaluation: episodes scored on fixed (task, init) pairs (null: one per env)
    # tabletop control, not pi0: append the things' true (x, y, z, yaw) to the state (pi0lab.envs.tabletop);
    # must match the checkpoint's state width, and env.train / env.eval must agree
    privileged_state: bool = False
    # seconds each env waits (sleeps, using no CPU) per chunk step, standing in for a renderer that runs
    # elsewhere (LIBERO on a GPU): what the pipelining benchmark sets; 0 in training
    step_wait_s: float = 0.0
    # [first, stop): the init states of every task this split uses (training draws them, evaluation scores
    # them in order from first), e.g. train [0, 30] and eval [30, 40] for a held-out score; null: all
    init_states: list[int] | None = None
    video_cfg: VideoConfig = field(default_factory=VideoConfig)


@dataclass
class EnvConfig:
    train: EnvSplitConfig = field(default_factory=EnvSplitConfig)
    eval: EnvSplitConfig = field(default_factory=EnvSplitConfig)


@dataclass
class RolloutConfig:
    pipeline_stage_num: int = 1  # env / rollout overlap stages (multi-process runtime only)


@dataclass
class OpenpiConfig:
    noise_level: float = 0.5
    action_chunk: int = "${actor.model.num_action_chunks}"  # type: ignore[assignment]
    num_steps: int = "${actor.model.num_steps}"  # type: ignore[assignment]
    train_expert_only: bool = True
    action_env_dim: int = "${actor.model.action_dim}"  # type: ignore[assignment]
    noise_method: Literal["flow_sde", "reinflow"] = "flow_sde"
    initial_noise: InitialNoise = "gaussian"  # x_1 of every sampling chain: N(0, I) or 0
    # a sample's log-prob: "sum" over the executed chunk, action dims and noisy steps (the recipe) or their
    # "mean" (DPPO / ReinFlow: the ratio then moves per dimension, and clip ratios of ~0.01-0.05 fit it)
    logprob_reduction: LogprobReduction = "sum"
    noise_std_min: float = 0.0  # floor on the std of every noisy denoise step (0: none)
    noise_steps: Literal["one", "all", "first"] | None = None  # noisy denoise steps (null: the method's own, flow_sde "one")
    add_value_head: bool = "${actor.model.add_value_head}"  # type: ignore[assignment]
    detach_critic_input: bool = True


@dataclass
class ActorModelConfig:
    model_path: str | None = None  # a pi0lab / openpi / lerobot / RLinf checkpoint (null: random init)
    size: Literal["nano", "pi0"] = "nano"
    precision: Precision = "fp32"
    num_action_chunks: int = 5
    num_steps: int = 4
    action_dim: int = ENV_ACTION_DIM
    add_value_head: bool = True
    openpi: OpenpiConfig = field(default_factory=OpenpiConfig)


@dataclass
class OptimConfig:
    lr: float = 5e-6
    value_lr: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1e-5
    weight_decay: float = 0.0
    clip_grad: float = 2.0
    critic_warmup_steps: int = 0  # iterations that train only the value head
    lr_warmup_steps: int = 0  # optimiser steps over which the policy's lr rises linearly from 0 (the value lr does not)


@dataclass
class ActorConfig:
    micro_batch_size: int = 128
    global_batch_size: int = 2048
    # several actor processes: "ddp" holds the whole model, gradients and AdamW state in each and sums the
    # gradients; "fsdp2" shards the trainable weights, their gradients and AdamW state over the actor processes
    # (torch FSDP2), the rollout acting with a full copy gathered after every update (pi0lab.train.sharding)
    data_parallel: Literal["ddp", "fsdp2"] = "ddp"
    # keep the actor's training state in host memory while rollouts run (GPU memory for the rollout beside it):
    # fsdp2 uses FSDP2's CPU offload (shards, gradients and AdamW state live on the host, AdamW steps there);
    # ddp moves AdamW's moments to the host after each update and back before the next. On CPU slots: no change.
    offload: bool = False
    seed: int = 42
    model: ActorModelConfig = field(default_factory=ActorModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class FreshModelConfig:
    """Changes to the `actor.model.size` preset for the model SFT builds from scratch (null: the preset's)."""

    action_horizon: int | None = None  # H, actions predicted per call
    cameras: list[str] | None = None  # camera names in prefix order
    patch_size: int | None = None  # SigLIP patch size (image tokens per camera = (image_size / patch)^2)
    max_token_len: int | None = None  # prompt length L


@dataclass
class SftConfig:
    demo_path: str = "runs/demos"
    demos_per_task: int = 5  # few-shot: demos used per task
    demo_action_noise: float = 0.0  # std of the noise executed (not stored) while recording demos (DART)
    augment: bool = False  # random crop, rotation and colour jitter of the demo images (openpi's recipe)
    init_path: str | None = None  # start from this checkpoint (a pretrained base) instead of random weights
    freeze_vision: bool = False  # keep the base's vision tower (SigLIP) as it is; needs sft.init_path
    num_steps: int = 2000  # optimiser steps
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    ema_decay: float | None = None  # evaluate and save an exponential moving average of the weights (openpi: 0.99)
    eval_interval: int = 500  # optimiser steps between evaluations (-1: only at the end, 0: never)
    model: FreshModelConfig = field(default_factory=lambda: FreshModelConfig())
    save_path: str = "runs/sft"


@dataclass
class PretrainConfig:
    """Localisation pretraining of the vision tower (`pi0lab pretrain`, `pi0lab.train.pretrain`)."""

    suite: str = "tabletop_pretrain"  # a tabletop suite whose scenes and expert give the frames
    scenes_per_task: int = 900  # initial states 0 .. n-1 of every task are recorded for training
    val_scenes_per_task: int = 20  # the next ones are held out to measure the localisation error
    frame_fraction: float = 0.25  # share of each expert episode's frames kept
    action_noise: float = 0.1  # std of the noise executed with the expert's actions (varied poses)
    num_steps: int = 6000  # optimiser steps
    batch_size: int = 64  # frames per step (both cameras of each)
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 1e-4
    eval_interval: int = 500  # optimiser steps between held-out errors
    save_path: str = "runs/pretrain/model"


@dataclass
class TrainConfig:
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


# ---------------------------------------------------------------------------------------------------
# Loading


def available_configs() -> list[str]:
    """Names of the configs shipped in pi0lab/configs/ (files starting with `_` are shared bases)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def _find_config(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        return path
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        hint = difflib.get_close_matches(str(name_or_path), available_configs(), n=1)
        raise ConfigError(
            f"no config named {name_or_path!r}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
            + f"; shipped configs: {', '.join(available_configs())}; or pass a path to a .yaml file"
        )
    return shipped


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | dict | None = None) -> DictConfig:
    """Load a shipped config by name (or a YAML path; None = the schema defaults), apply overrides, validate.

    overrides: ["key.sub=value", ...] as on the command line, or a nested / dotted dict from Python.
    """
    user = OmegaConf.create({}) if name_or_path is None else _load_yaml(_find_config(name_or_path))
    if isinstance(overrides, dict):
        dotted = {k: v for k, v in overrides.items() if "." in k}
        nested = {k: v for k, v in overrides.items() if "." not in k}
        user = _merge(user, OmegaConf.create(nested))
        user = _merge(user, OmegaConf.from_dotlist([f"{k}={_yaml_value(v)}" for k, v in dotted.items()]))
    elif overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"overrides must look like key.sub=value, got {bad}")
        user = _merge(user, OmegaConf.from_dotlist(list(overrides)))
    return validate_config(user)


REPLACED_ON_MERGE = ("cluster.component_placement",)  # mappings that an override replaces whole


def _merge(base: DictConfig, override: DictConfig) -> DictConfig:
    """OmegaConf.merge, except that the REPLACED_ON_MERGE mappings of `override` replace `base`'s."""
    base = base.copy()
    for path in REPLACED_ON_MERGE:
        if OmegaConf.select(override, path) is not None and OmegaConf.select(base, path) is not None:
            OmegaConf.update(base, path, {}, merge=False)
    return OmegaConf.merge(base, override)


def _load_yaml(path: Path) -> DictConfig:
    """Load one YAML file; a top-level `defaults: [name, ...]` list merges those configs first."""
    cfg = OmegaConf.load(path)
    bases = cfg.pop("defaults", [])
    merged = OmegaConf.create({})
    for base in bases:
        merged = _merge(merged, _load_yaml(_find_config(base)))
    return _merge(merged, cfg)


def _yaml_value(value: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.create({"v": value})).split(":", 1)[1].strip()


def validate_config(user: DictConfig) -> DictConfig:
    """Check `user` against the schema and for consistency; return the merged, typed config."""
    try:
        resolved = OmegaConf.to_container(user, resolve=True)
    except Exception as err:  # omegaconf raises several interpolation errors
        raise ConfigError(f"cannot resolve an interpolation: {err}") from None
    _check_against_schema(resolved, TrainConfig, "")
    cfg = _merge(OmegaConf.structured(TrainConfig), user)
    check_consistency(cfg)
    return cfg


def _check_against_schema(values: Any, schema: type, where: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            raise ConfigError(
                f"unknown config key {path!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; valid keys here: {', '.join(fields)}"
            )
        _check_type(value, hints[key], path)


def _check_type(value: Any, hint: Any, path: str) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        _check_against_schema(value, hint, path)
    elif origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        non_null = [a for a in args if a is not type(None)]
        _check_type(value, non_null[0], path)
    elif origin is Literal:
        if value not in args:
            raise ConfigError(f"{path} must be one of {list(args)}, got {value!r}")
    elif origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        for i, item in enumerate(value):
            _check_type(item, args[0], f"{path}[{i}]")
    elif origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        for key, item in value.items():
            _check_type(item if not isinstance(item, int) else str(item), args[1], f"{path}.{key}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path} must be a number, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an integer, got {value!r}")
    elif hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
    else:
        raise TypeError(f"schema type {hint} of {path} is not handled")


def check_consistency(cfg: DictConfig) -> None:
    """Cross-key checks that the schema's types cannot express; each error names the keys involved."""
    from pi0lab.runtime.placement import parse_placement

    def fail(message: str) -> None:
        raise ConfigError(message)

    algo, train_env, model = cfg.algorithm, cfg.env.train, cfg.actor.model
    for split in ("train", "eval"):
        init_states = cfg.env[split].init_states
        if init_states is not None and (len(init_states) != 2 or not 0 <= init_states[0] < init_states[1]):
            fail(f"env.{split}.init_states={list(init_states)} must be [first, stop] with 0 <= first < stop "
                 "(the init states first..stop-1 of every task), or null for all")
    for backend in cfg.runner.logger.logger_backends:
        if backend not in LOGGER_BACKENDS:
            fail(f"runner.logger.logger_backends: unknown backend {backend!r}; valid: {', '.join(LOGGER_BACKENDS)}")
    try:
        parse_placement(cfg.cluster.component_placement, cfg.cluster.num_nodes * cfg.cluster.num_devices)
    except ValueError as err:
        fail(f"cluster.component_placement: {err}")
    if cfg.rollout.pipeline_stage_num < 1:
        fail(f"rollout.pipeline_stage_num must be >= 1, got {cfg.rollout.pipeline_stage_num}")
    for split in ("train", "eval"):
        env = cfg.env[split]
        if env.total_num_envs < 1:
            fail(f"env.{split}.total_num_envs must be >= 1, got {env.total_num_envs}")
        if env.video_cfg.interval < 1:
            fail(f"env.{split}.video_cfg.interval must be >= 1 (record every interval-th iteration), "
                 f"got {env.video_cfg.interval}")
        if env.total_num_envs % env.group_size:
            fail(
                f"env.{split}.group_size={env.group_size} does not divide "
                f"env.{split}.total_num_envs={env.total_num_envs}"
            )
        if env.total_num_envs % cfg.rollout.pipeline_stage_num:
            fail(
                f"rollout.pipeline_stage_num={cfg.rollout.pipeline_stage_num} does not divide "
                f"env.{split}.total_num_envs={env.total_num_envs}"
            )
        from pi0lab.envs import TABLETOP_SUITES

        if env.privileged_state and env.task_suite_name not in TABLETOP_SUITES:
            fail(f"env.{split}.privileged_state=true is a tabletop control, but env.{split}.task_suite_name="
                 f"{env.task_suite_name!r} is not a tabletop suite ({', '.join(TABLETOP_SUITES)})")
    if cfg.env.train.privileged_state != cfg.env.eval.privileged_state:
        fail(f"env.train.privileged_state={cfg.env.train.privileged_state} != env.eval.privileged_state="
             f"{cfg.env.eval.privileged_state}: one policy reads both splits' states (and SFT evaluates on "
             "env.eval with its demos' layout), so set both to the same value")
    if algo.adv_type == "grpo":
        if algo.group_size < 2:
            fail(f"algorithm.adv_type=grpo needs algorithm.group_size >= 2, got {algo.group_size}")
        if train_env.group_size != algo.group_size:
            fail(
                f"env.train.group_size={train_env.group_size} must equal algorithm.group_size={algo.group_size} "
                "(each block of group_size envs shares task and initial state)"
            )
    if algo.adv_type == "gae":
        if algo.loss_type != "actor_critic" or not model.add_value_head:
            fail(
                "algorithm.adv_type=gae needs a critic: set algorithm.loss_type=actor_critic and "
                "actor.model.add_value_head=true (or use adv_type=grpo)"
            )
    if algo.loss_type == "actor_critic" and not model.add_value_head:
        fail("algorithm.loss_type=actor_critic needs actor.model.add_value_head=true")
    if (algo.adv_type == "embodied_sac") != (algo.loss_type == "embodied_sac"):
        fail(f"algorithm.adv_type={algo.adv_type} and algorithm.loss_type={algo.loss_type}: DSRL sets both to "
             "embodied_sac, PPO / GRPO neither")
    if algo.adv_type == "embodied_sac":
        _check_sac(algo.sac, model.size, cfg.sft.model.action_horizon or _action_horizon(model.size), fail)
    if not 0 <= algo.rewards_lower_bound <= algo.rewards_upper_bound <= 1:
        fail("algorithm.rewards_lower_bound <= rewards_upper_bound must hold, both in [0, 1]")
    if not (0 < algo.gamma <= 1 and 0 <= algo.gae_lambda <= 1):
        fail("algorithm.gamma must be in (0, 1] and algorithm.gae_lambda in [0, 1]")
    if model.action_dim != ENV_ACTION_DIM:
        fail(f"actor.model.action_dim={model.action_dim} does not match the env's action dims ({ENV_ACTION_DIM})")
    openpi = model.openpi
    if openpi.action_env_dim != model.action_dim:
        fail(f"actor.model.openpi.action_env_dim={openpi.action_env_dim} != actor.model.action_dim={model.action_dim}")
    if openpi.action_chunk != model.num_action_chunks:
        fail(f"actor.model.openpi.action_chunk={openpi.action_chunk} != actor.model.num_action_chunks={model.num_action_chunks}")
    if openpi.num_steps != model.num_steps or model.num_steps < 1:
        fail(f"actor.model.openpi.num_steps={openpi.num_steps} must equal actor.model.num_steps={model.num_steps} (>= 1)")
    if openpi.noise_std_min < 0:
        fail(f"actor.model.openpi.noise_std_min must be >= 0, got {openpi.noise_std_min}")
    if cfg.actor.optim.lr_warmup_steps < 0:
        fail(f"actor.optim.lr_warmup_steps must be >= 0, got {cfg.actor.optim.lr_warmup_steps}")
    if openpi.add_value_head != model.add_value_head:
        fail(f"actor.model.openpi.add_value_head={openpi.add_value_head} != actor.model.add_value_head={model.add_value_head}")
    horizon = cfg.sft.model.action_horizon or _action_horizon(model.size)
    if not 1 <= model.num_action_chunks <= horizon:
        fail(
            f"actor.model.num_action_chunks={model.num_action_chunks} must be in [1, {horizon}] "
            f"(the action horizon of the {model.size!r} model)"
        )
    if cfg.sft.demo_action_noise < 0:
        fail(f"sft.demo_action_noise must be >= 0, got {cfg.sft.demo_action_noise}")
    if cfg.sft.ema_decay is not None and not 0 <= cfg.sft.ema_decay < 1:
        fail(f"sft.ema_decay must be in [0, 1) or null (no average), got {cfg.sft.ema_decay}")
    if cfg.sft.freeze_vision and cfg.sft.init_path is None:
        fail("sft.freeze_vision=true keeps the vision tower of a base, but sft.init_path is null (random weights); "
             "set sft.init_path to a base (`pi0lab pretrain tabletop_pretrain_nano` writes one) or sft.freeze_vision=false")
    _check_pretrain(cfg.pretrain, fail)
    if cfg.actor.global_batch_size % cfg.actor.micro_batch_size:
        fail(
            f"actor.micro_batch_size={cfg.actor.micro_batch_size} does not divide "
            f"actor.global_batch_size={cfg.actor.global_batch_size}"
        )


def _check_sac(sac: DictConfig, size: str, horizon: int, fail) -> None:
    """The SAC group's own ranges; `DSRLTrainer` checks the noise block again against the loaded model."""
    from pi0lab.models import Pi0Config

    model_dims = getattr(Pi0Config, size)().action_dim
    if not 1 <= sac.noise_horizon <= horizon or not 1 <= sac.noise_dims <= model_dims:
        fail(f"algorithm.sac.noise_horizon={sac.noise_horizon} must be in [1, {horizon}] and algorithm.sac.noise_dims="
             f"{sac.noise_dims} in [1, {model_dims}] (x_1 of the {size!r} model is [{horizon}, {model_dims}])")
    if not 1 <= sac.target_q_heads <= sac.num_q_heads:
        fail(f"algorithm.sac.num_q_heads={sac.num_q_heads} must be >= 1 and algorithm.sac.target_q_heads="
             f"{sac.target_q_heads} in [1, num_q_heads] (the heads the TD target takes the minimum of)")
    if not sac.hidden_dims or min(sac.hidden_dims) < 1 or sac.latent_dim < 1:
        fail(f"algorithm.sac.hidden_dims={list(sac.hidden_dims)} must be a non-empty list of widths >= 1 and "
             f"algorithm.sac.latent_dim={sac.latent_dim} >= 1")
    for name in ("noise_bound", "actor_lr", "critic_lr", "alpha_lr", "initial_alpha", "initial_std"):
        if sac[name] <= 0:
            fail(f"algorithm.sac.{name} must be > 0, got {sac[name]}")
    if sac.critic_actor_ratio < 1:
        fail(f"algorithm.sac.critic_actor_ratio must be >= 1 (critic steps per actor step), got {sac.critic_actor_ratio}")
    if sac.critic_warmup_iterations < 0:
        fail(f"algorithm.sac.critic_warmup_iterations must be >= 0 (iterations that step the critic only), "
             f"got {sac.critic_warmup_iterations}")
    if sac.n_step < 1:
        fail(f"algorithm.sac.n_step must be >= 1 (chunk steps summed before bootstrapping), got {sac.n_step}")
    if not 0 < sac.tau <= 1:
        fail(f"algorithm.sac.tau must be in (0, 1], got {sac.tau}")
    if not 0 <= sac.learning_starts <= sac.replay_buffer_size:
        fail(f"algorithm.sac.learning_starts={sac.learning_starts} must be in [0, algorithm.sac.replay_buffer_size="
             f"{sac.replay_buffer_size}] (transitions collected before the first gradient step)")
    if min(sac.batch_size, sac.replay_buffer_size) < 1 or sac.updates_per_iteration < 0:
        fail(f"algorithm.sac.batch_size={sac.batch_size} and algorithm.sac.replay_buffer_size={sac.replay_buffer_size} "
             f"must be >= 1, algorithm.sac.updates_per_iteration={sac.updates_per_iteration} >= 0")


def _check_pretrain(pre: DictConfig, fail) -> None:
    from pi0lab.envs.tabletop.suites import NUM_INIT_STATES

    if pre.suite not in NUM_INIT_STATES:
        fail(f"pretrain.suite={pre.suite!r} is not a tabletop suite; valid: {', '.join(NUM_INIT_STATES)}")
    if min(pre.scenes_per_task, pre.val_scenes_per_task) < 1 or \
            pre.scenes_per_task + pre.val_scenes_per_task > NUM_INIT_STATES[pre.suite]:
        fail(f"pretrain.scenes_per_task + pretrain.val_scenes_per_task must be in [2, {NUM_INIT_STATES[pre.suite]}] "
             f"(the initial states of {pre.suite}), both >= 1; got {pre.scenes_per_task} + {pre.val_scenes_per_task}")
    if not 0 < pre.frame_fraction <= 1:
        fail(f"pretrain.frame_fraction must be in (0, 1], got {pre.frame_fraction}")
    if pre.action_noise < 0:
        fail(f"pretrain.action_noise must be >= 0, got {pre.action_noise}")
    if min(pre.num_steps, pre.batch_size, pre.eval_interval) < 1:
        fail("pretrain.num_steps, pretrain.batch_size and pretrain.eval_interval must be >= 1")


def _action_horizon(size: str) -> int:
    from pi0lab.models import Pi0Config

    return getattr(Pi0Config, size)().action_horizon
