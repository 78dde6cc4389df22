"""Localisation pretraining of the vision tower: the tabletop stand-in for PaliGemma's pretraining.

pi0's few-shot results start from a vision-language model pretrained on web-scale data, object
detection included. A nano SigLIP trained from scratch on a few demos learns to recognise its demo
scenes but not to say where things are in new ones. This stage teaches the tower exactly that, from
the privileged state of the built-in simulator: frames of scripted-expert episodes on the
`tabletop_pretrain` suite (scattered scenes, different tasks from the four evaluation suites), each
labelled with where every thing is.

Targets, for the S = len(SLOTS) names a scene may hold (metres; the eef's yaw as cos, sin):

    main camera:  present_s, (x, y, z)_s of each thing in the world frame; eef (x, y, z, cos, sin)
    wrist camera: visible_s (|u|, |v| < WRIST_REACH), (u, v)_s = R(-yaw) (p_s - eef)_xy, the gripper frame

Heads: one linear map per camera from the flattened patch tokens [B, N*W], so the tokens must carry
positions. With positions in decimetres (POSITION_SCALE), present = 1 / visible = 1 masks:

    L = BCE(present) + sum_s present_s |x_hat - 10 x|^2 / sum_s present_s + |eef_hat - eef'|^2
      + BCE(visible) + sum_s visible_s |uv_hat - 10 uv|^2 / sum_s visible_s

The saved base is a whole pi0 checkpoint: random weights (seed `actor.seed`) with the pretrained
tower, and no normalisation stats (it has never seen actions), so few-shot SFT from it
(`sft.init_path`) takes its stats from the demos.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm

from pi0lab.envs.demos import with_execution_noise
from pi0lab.envs.tabletop import TabletopVectorEnv
from pi0lab.envs.tabletop.suites import OBJECTS, check_suite
from pi0lab.envs.tabletop.world import World
from pi0lab.models import Pi0
from pi0lab.models.checkpoint import save_pi0
from pi0lab.models.config import SiglipConfig
from pi0lab.models.policy import to_model_images
from pi0lab.models.siglip import SiglipVisionTower
from pi0lab.train.checkpoint import write_atomically
from pi0lab.train.loggers import MetricLogger
from pi0lab.train.sft import fresh_model_config, lr_at

SLOTS = (*OBJECTS, "plate", "basket", "cabinet")  # one target slot per thing name
WRIST_REACH = 0.15  # m: a thing counts as visible to the wrist camera within this of the eef, along u and v
POSITION_SCALE = 10.0  # positions are regressed in decimetres
EEF_SCALE = (POSITION_SCALE,) * 3 + (1.0, 1.0)
ENVS_PER_BATCH = 100  # expert episodes recorded side by side
HELD_OUT_FRAMES = 512  # evenly spaced held-out frames the error is measured on


@dataclass
class Frames:
    """Labelled camera frames: N frames."""

    main_images: np.ndarray  # uint8 [N,S,S,3]
    wrist_images: np.ndarray  # uint8 [N,S,S,3]
    main_targets: np.ndarray  # float32 [N,len(SLOTS),4]: present, x, y, z
    wrist_targets: np.ndarray  # float32 [N,len(SLOTS),3]: visible, u, v
    eef: np.ndarray  # float32 [N,5]: x, y, z, cos yaw, sin yaw

    def __len__(self) -> int:
        return len(self.eef)

    def batch(self, index: np.ndarray) -> dict[str, Tensor]:
        """Tensors of frames `index`: images [B,3,S,S] in [-1, 1] (as the policy feeds pi0), targets as above."""
        size = self.main_images.shape[1]
        return {"main": to_model_images(torch.as_tensor(self.main_images[index]), size),
                "wrist": to_model_images(torch.as_tensor(self.wrist_images[index]), size),
                "main_targets": torch.as_tensor(self.main_targets[index]),
                "wrist_targets": torch.as_tensor(self.wrist_targets[index]), "eef": torch.as_tensor(self.eef[index])}


def scene_targets(world: World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where everything is -> main [len(SLOTS),4], wrist [len(SLOTS),3], eef [5] (see the module docstring)."""
    main = np.zeros((len(SLOTS), 4), np.float32)
    wrist = np.zeros((len(SLOTS), 3), np.float32)
    cos, sin = math.cos(world.yaw), math.sin(world.yaw)
    for thing in world.things:
        slot = SLOTS.index(thing.name)
        if main[slot, 0]:
            raise ValueError(f"the scene holds two things named {thing.name!r}: localisation targets need one thing "
                             "per name (tabletop_spatial repeats its red cube; pretrain on tabletop_pretrain)")
        main[slot] = (1.0, *thing.pos)
        dx, dy = thing.pos[0] - world.eef[0], thing.pos[1] - world.eef[1]
        u, v = cos * dx + sin * dy, -sin * dx + cos * dy  # R(-yaw) (p - eef)
        wrist[slot] = (float(abs(u) < WRIST_REACH and abs(v) < WRIST_REACH), u, v)
    return main, wrist, np.array([*world.eef, cos, sin], np.float32)


def record_frames(suite: str, init_state_ids, frame_fraction: float, action_noise: float, image_size: int,
                  seed: int, progress: bool = True) -> Frames:
    """Run the scripted expert (executing its action plus `action_noise` Gaussian noise on dims 0-5,
    as DART demos do) from every (task, init state) of `suite` and keep each frame with probability
    `frame_fraction` (the frames of one episode are alike), labelled by `scene_targets`."""
    rng = np.random.default_rng(seed)
    init_state_ids, num_tasks = list(init_state_ids), len(check_suite(suite))
    tasks = np.repeat(np.arange(num_tasks), len(init_state_ids))
    inits = np.tile(np.asarray(init_state_ids), num_tasks)
    kept = {"main": [], "wrist": [], "main_targets": [], "wrist_targets": [], "eef": []}
    bar = tqdm(total=len(tasks), desc=f"frames {suite}", unit="ep", disable=not progress)
    for start in range(0, len(tasks), ENVS_PER_BATCH):
        env = TabletopVectorEnv(suite, len(tasks[start:start + ENVS_PER_BATCH]), image_size=image_size, seed=seed + start)
        obs = env.reset(task_ids=tasks[start:start + ENVS_PER_BATCH], init_state_ids=inits[start:start + ENVS_PER_BATCH])
        ended = np.zeros(env.num_envs, bool)
        while not ended.all():
            keep = ~ended & (rng.random(env.num_envs) < frame_fraction)
            for i in np.flatnonzero(keep):
                for key, value in zip(("main_targets", "wrist_targets", "eef"), scene_targets(env.envs[i].world)):
                    kept[key].append(value)
            kept["main"].append(obs["main_images"][keep])
            kept["wrist"].append(obs["wrist_images"][keep])
            actions = with_execution_noise(env.expert_actions(1).astype(np.float32), action_noise, env.expert_rng)
            obs, _, terminated, truncated, _ = env.step(actions)  # actions [N,1,7]
            ended |= terminated[:, 0] | truncated[:, 0]
        bar.update(env.num_envs)
    bar.close()
    return Frames(np.concatenate(kept["main"]), np.concatenate(kept["wrist"]), np.stack(kept["main_targets"]),
                  np.stack(kept["wrist_targets"]), np.stack(kept["eef"]))


class LocalisationHeads(nn.Module):
    """The vision tower plus one linear head per camera on its flattened tokens.

    (main [B,3,S,S], wrist [B,3,S,S]) -> main [B,len(SLOTS),4] (present logit, x, y, z in dm),
    eef [B,5], wrist [B,len(SLOTS),3] (visible logit, u, v in dm).
    """

    def __init__(self, vision: SiglipConfig):
        super().__init__()
        self.vision = SiglipVisionTower(vision)
        flat = vision.num_patches * vision.width
        self.main_head = nn.Linear(flat, len(SLOTS) * 4 + 5)
        self.wrist_head = nn.Linear(flat, len(SLOTS) * 3)

    def forward(self, main: Tensor, wrist: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b = main.shape[0]
        tokens = self.vision(torch.cat([main, wrist]))  # one pass for both cameras, as pi0's prefix does
        main_out = self.main_head(tokens[:b].flatten(1))
        wrist_out = self.wrist_head(tokens[b:].flatten(1))
        return main_out[:, :-5].view(b, len(SLOTS), 4), main_out[:, -5:], wrist_out.view(b, len(SLOTS), 3)


def localisation_loss(predicted: tuple[Tensor, Tensor, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """The loss L of the module docstring, and the RMS position errors in cm (`main_cm`: 3-D over
    the things present, `wrist_cm`: 2-D over the things the wrist camera reaches)."""
    main, eef, wrist = predicted
    main_targets, wrist_targets = batch["main_targets"], batch["wrist_targets"]
    present, visible = main_targets[..., 0], wrist_targets[..., 0]
    main_error = ((main[..., 1:] - POSITION_SCALE * main_targets[..., 1:]) ** 2).sum(-1).mul(present).sum() / present.sum()
    wrist_error = ((wrist[..., 1:] - POSITION_SCALE * wrist_targets[..., 1:]) ** 2).sum(-1).mul(visible).sum() / visible.sum().clamp(min=1)
    eef_error = ((eef - batch["eef"] * torch.tensor(EEF_SCALE)) ** 2).sum(-1).mean()
    loss = (F.binary_cross_entropy_with_logits(main[..., 0], present) + main_error + eef_error
            + F.binary_cross_entropy_with_logits(wrist[..., 0], visible) + wrist_error)
    to_cm = 100.0 / POSITION_SCALE
    return loss, {"main_cm": main_error.detach().sqrt().item() * to_cm, "wrist_cm": wrist_error.detach().sqrt().item() * to_cm}


def run_pretrain(cfg: DictConfig, progress: bool = True) -> Path:
    """Pretrain the vision tower of the model `actor.model.size` + `sft.model` describe on
    `pretrain.suite` and save the base to `pretrain.save_path` (Ctrl-C saves the tower reached so far)."""
    pre = cfg.pretrain
    config = fresh_model_config(cfg)
    size = config.vision.image_size
    train = record_frames(pre.suite, range(pre.scenes_per_task), pre.frame_fraction, pre.action_noise, size,
                          cfg.actor.seed, progress)
    held_out = record_frames(pre.suite, range(pre.scenes_per_task, pre.scenes_per_task + pre.val_scenes_per_task),
                             pre.frame_fraction, pre.action_noise, size, cfg.actor.seed + 1, progress)
    torch.manual_seed(cfg.actor.seed)
    base = Pi0(config)  # the weights SFT starts from outside the tower
    heads = LocalisationHeads(config.vision)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=pre.lr, weight_decay=pre.weight_decay)
    rng = np.random.default_rng(cfg.actor.seed)
    logger = MetricLogger(cfg.runner.logger.log_path, list(cfg.runner.logger.logger_backends),
                          cfg.runner.logger.project_name, cfg.runner.logger.experiment_name,
                          OmegaConf.to_container(cfg, resolve=True))
    save_path = Path(pre.save_path)
    held_out_batch = held_out.batch(np.linspace(0, len(held_out) - 1, min(HELD_OUT_FRAMES, len(held_out))).astype(int))

    def save() -> None:
        base.vision.load_state_dict(heads.vision.state_dict())
        write_atomically(save_path, lambda tmp: save_pi0(base, tmp))

    if progress:
        print(f"localisation pretraining on {len(train)} frames ({len(held_out)} held out), "
              f"{sum(p.numel() for p in heads.vision.parameters()):,} tower parameters")
    try:
        bar = tqdm(range(pre.num_steps), desc="pretrain", disable=not progress)
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, pre)
            batch = train.batch(rng.integers(len(train), size=pre.batch_size))
            loss, metrics = localisation_loss(heads(batch["main"], batch["wrist"]), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(heads.parameters(), 1.0)
            optimizer.step()
            metrics = {"pretrain/loss": loss.item(), **{f"pretrain/{k}": v for k, v in metrics.items()}}
            done = step + 1
            if done == pre.num_steps or done % pre.eval_interval == 0:
                held = held_out_errors(heads, held_out_batch)
                metrics.update({f"pretrain/held_out_{k}": v for k, v in held.items()})
                bar.write(f"step {done}: held-out error {held['main_cm']:.1f} cm (main camera), "
                          f"{held['wrist_cm']:.1f} cm (wrist)")
            logger.log(metrics, done)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    except KeyboardInterrupt:
        save()
        print(f"\ninterrupted: the base so far is saved to {save_path}")
        raise
    finally:
        logger.close()
    save()
    return save_path


@torch.no_grad()
def held_out_errors(heads: LocalisationHeads, batch: dict[str, Tensor]) -> dict[str, float]:
    """RMS position errors (cm) of the heads in eval mode on a `Frames.batch`."""
    heads.eval()
    _, errors = localisation_loss(heads(batch["main"], batch["wrist"]), batch)
    heads.train()
    return errors
