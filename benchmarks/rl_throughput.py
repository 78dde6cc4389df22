"""End-to-end RL throughput on the tabletop: env steps/s and the time split env / model / update.

    python benchmarks/rl_throughput.py [--iterations 3] [--envs 40] [key=value ...]
    python benchmarks/rl_throughput.py --envs 16 actor.model.size=pi0 actor.model.precision=bf16   # GPU

Runs PPO iterations of tabletop_ppo_nano from a freshly initialised CPU-sized nano (the numbers do
not depend on what the policy has learned beyond episode length, so every episode runs to the
suite's step limit here: the slowest case).
"""

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from pi0lab.models import Pi0
from pi0lab.models.checkpoint import save_pi0
from pi0lab.models.normalize import NormStats
from pi0lab.models.tokenizer import PaligemmaTokenizer
from pi0lab.train.config import load_config
from pi0lab.train.sft import fresh_model_config
from pi0lab.train.trainer import RLTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--envs", type=int, default=40)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        size = [o for o in args.overrides if o.startswith("actor.model.size=")]
        # The prompt is tokenised with the shipped 512-piece tokenizer, so the real size's 257k-row
        # embedding table is cut to 512 rows (it is a lookup: the compute is the real size's).
        config = dataclasses.replace(fresh_model_config(load_config("tabletop_sft_nano", size)),
                                     vocab_size=PaligemmaTokenizer().vocab_size)
        model = Pi0(config)
        model.norm_stats = {"state": NormStats(np.zeros(8), np.ones(8)), "actions": NormStats(np.zeros(7), np.ones(7))}
        checkpoint = save_pi0(model, Path(tmp) / "model")
        cfg = load_config("tabletop_ppo_nano", [
            f"actor.model.model_path={checkpoint}", f"runner.logger.log_path={tmp}/run", f"runner.max_epochs={args.iterations}",
            f"env.train.total_num_envs={args.envs}", "runner.val_check_interval=-1", "runner.save_interval=-1",
            "env.train.video_cfg.save_video=false", "runner.logger.logger_backends=[]", *args.overrides])
        trainer = RLTrainer(cfg, progress=False)
        rows = [event.metrics for event in trainer.iterate()]
        trainer.close()
    print(f"{trainer.device}, {cfg.actor.model.size} {cfg.actor.model.precision}, torch threads {torch.get_num_threads()}, {args.envs} envs, chunk {cfg.actor.model.num_action_chunks}, "
          f"{cfg.actor.model.num_steps} flow steps, update epochs {cfg.algorithm.update_epoch}"
          + (f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if trainer.device.type == "cuda" else ""))
    print("| iteration | env steps | env s | model (rollout) s | update s | env steps/s (rollout) | iteration s |")
    print("|---|---|---|---|---|---|---|")
    for i, m in enumerate(rows, 1):
        print(f"| {i} | {m['env/steps']:.0f} | {m['time/env']:.2f} | {m['time/rollout']:.2f} | {m['time/update']:.2f} "
              f"| {m['env/steps_per_second']:.0f} | {m['time/iteration']:.1f} |")


if __name__ == "__main__":
    main()
