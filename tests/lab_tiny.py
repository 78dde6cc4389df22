"""Overrides that shrink tabletop_ppo_nano to a trial of seconds (4 envs, tiny batches, no video or evaluation).

    from lab_tiny import tiny_overrides
    tiny_overrides(checkpoint, iterations=2)
"""


def tiny_overrides(checkpoint, iterations: int = 2) -> list[str]:
    return [
        f"actor.model.model_path={checkpoint}", f"runner.max_epochs={iterations}",
        "env.train.task_suite_name=tabletop_goal", "env.train.total_num_envs=4",
        "env.eval.total_num_envs=4", "env.eval.num_episodes=4",
        "env.train.video_cfg.save_video=false", "env.eval.video_cfg.save_video=false",
        "runner.val_check_interval=-1", "runner.save_interval=-1",
        "actor.global_batch_size=32", "actor.micro_batch_size=16", "algorithm.update_epoch=1",
    ]
