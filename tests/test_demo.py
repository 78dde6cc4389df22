"""`make demo` end to end at toy size: demos -> SFT -> PPO and DSRL side by side -> table and report."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_runs_every_stage_and_prints_the_table(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    tiny = ["sft.num_steps=2", "sft.demos_per_task=1", "runner.max_epochs=1", "env.train.total_num_envs=4",
            "env.eval.total_num_envs=4", "env.eval.num_episodes=4", "actor.global_batch_size=16",
            "actor.micro_batch_size=8", "algorithm.sac.batch_size=8", "algorithm.sac.updates_per_iteration=2",
            "env.train.video_cfg.save_video=false", "env.eval.video_cfg.save_video=false"]
    assert demo.main(["--out", str(tmp_path / "run"), "--report", str(tmp_path / "report.html"), *tiny]) == 0
    printed = capsys.readouterr().out
    assert "| pi0 nano, few-shot SFT |" in printed and "| PPO |" in printed and "| DSRL |" in printed
    assert "PPO - SFT:" in printed and "DSRL - SFT:" in printed and "paired standard error" in printed
    for stage in ("PPO", "DSRL"):  # 4 envs, one iteration: one episode each, to the step limit (60 steps)
        assert re.search(rf"{stage} - SFT: [-+][\d.]+ points \(paired standard error [\d.]+\) after 240 env steps in 4 "
                         "training episodes", printed)
    assert (tmp_path / "report.html").read_text().count("<h2>") == 5
    assert (tmp_path / "run" / "ppo" / "checkpoints" / "latest").is_file()
    assert (tmp_path / "run" / "dsrl" / "checkpoints" / "latest").is_file()
