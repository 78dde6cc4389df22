"""Videos in the lab and the evaluation views: per-episode evaluation videos, the VideoViewer's picking widgets,
the gallery of successes and failures, per-task bars."""

import imageio.v2 as imageio
import numpy as np
import pytest
from omegaconf import OmegaConf

from pi0lab.envs.video import compose_frame, encode_mp4
from pi0lab.lab import VideoViewer, episode_gallery, task_success_figure
from pi0lab.train.config import load_config
from pi0lab.train.evaluate import EvalResult, evaluate_checkpoint
from pi0lab.train.trainer import RLTrainer


def _fake_run(run_dir, log_path, files):
    """A run directory: config.yaml (as a trainer saves it, with `log_path`) and one-frame mp4s of given grey levels."""
    cfg = load_config("tabletop_ppo_nano", [f"runner.logger.log_path={log_path}"])
    run_dir.mkdir(parents=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    for name, grey in files.items():
        path = run_dir / "video" / name.split("_")[0] / f"{name}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        encode_mp4([np.full((32, 32, 3), grey, np.uint8)], path, fps=10)


def test_viewer_shows_the_picked_run_split_and_episode(tmp_path):
    _fake_run(tmp_path / "a", tmp_path / "a", {"train_iter_000001_env0": 10, "train_iter_000002_env0": 20,
                                                "eval_iter_000002_task00_init00": 30})
    # a run moved from where it was trained: its videos are found next to its config.yaml
    _fake_run(tmp_path / "b", "/elsewhere/b", {"train_iter_000001_env0": 40})
    viewer = VideoViewer(tmp_path)
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    assert [label for label, _ in viewer.run.options] == ["a", "b"]
    assert viewer.run.value == run_a and viewer.split.value == "train"
    assert [label for label, _ in viewer.episode.options] == ["train_iter_000001_env0", "train_iter_000002_env0"]
    assert viewer.video.value == (run_a / "video/train/train_iter_000001_env0.mp4").read_bytes()

    viewer.episode.value = run_a / "video/train/train_iter_000002_env0.mp4"
    assert viewer.video.value == viewer.episode.value.read_bytes()
    viewer.split.value = "eval"
    assert viewer.video.value == (run_a / "video/eval/eval_iter_000002_task00_init00.mp4").read_bytes()
    viewer.run.value = run_b
    assert viewer.message.value.startswith("no eval videos") and viewer.video.value == b""
    viewer.split.value = "train"
    assert viewer.video.value == (run_b / "video/train/train_iter_000001_env0.mp4").read_bytes()
    # the files differ, so each check above saw the video it picked
    assert len({(run_a / "video/train" / f"train_iter_00000{i}_env0.mp4").read_bytes() for i in (1, 2)}) == 2


def test_refresh_finds_new_videos_and_keeps_the_pick(tmp_path):
    _fake_run(tmp_path / "a", tmp_path / "a", {"train_iter_000001_env0": 10, "train_iter_000002_env0": 20})
    viewer = VideoViewer(tmp_path)
    picked = tmp_path / "a/video/train/train_iter_000002_env0.mp4"
    viewer.episode.value = picked
    encode_mp4([np.zeros((32, 32, 3), np.uint8)], tmp_path / "a/video/train/train_iter_000003_env0.mp4", fps=10)
    viewer.refresh_button.click()
    assert len(viewer.episode.options) == 3 and viewer.episode.value == picked
    assert viewer.video.value == picked.read_bytes()


def test_viewer_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass the folder that holds your runs"):
        VideoViewer(tmp_path / "nothing")
    viewer = VideoViewer(tmp_path)
    assert viewer.run.options == () and "no runs" in viewer.message.value and viewer.video.value == b""


def test_camera_names_are_drawn_only_with_the_banner():
    main, wrist = np.full((16, 16, 3), 128, np.uint8), np.full((16, 16, 3), 128, np.uint8)
    plain = compose_frame(main, wrist, 64, None)
    labelled = compose_frame(main, wrist, 64, ["a task", "step 1"])
    assert (plain == 128).all()
    for left in (0, 64):  # top-left corner of each view: white text on a black box
        corner = labelled[:12, left : left + 20]
        assert (corner == 0).any() and (corner > 200).any()
    assert (labelled[20:64] == 128).all()  # the rest of the views is untouched


def test_trainer_evaluation_writes_one_video_per_episode_of_env0(random_nano_checkpoint, tmp_path):
    # 4 pairs on 2 envs: two rounds; env 0 plays pair 0 (task 0) then pair 2 (task 2), init state 0 each
    cfg = load_config("tabletop_ppo_nano", [
        f"actor.model.model_path={random_nano_checkpoint}", f"runner.logger.log_path={tmp_path}",
        "env.train.task_suite_name=tabletop_goal", "env.train.total_num_envs=2", "env.eval.total_num_envs=2",
        "env.eval.num_episodes=4", "env.eval.max_episode_steps=10"])
    trainer = RLTrainer(cfg, progress=False)
    OmegaConf.save(cfg, tmp_path / "config.yaml", resolve=True)  # what a run's first iteration writes
    result = trainer.evaluate()
    trainer.close()
    folder = tmp_path / "video" / "eval"
    assert sorted(p.name for p in folder.iterdir()) == ["eval_iter_000000_task00_init00.mp4",
                                                        "eval_iter_000000_task02_init00.mp4"]
    assert result.videos == {(0, 0): folder / "eval_iter_000000_task00_init00.mp4",
                             (2, 0): folder / "eval_iter_000000_task02_init00.mp4"}
    for path in result.videos.values():  # 10 steps in chunks of 5 (a random nano does not succeed): 2 frames
        assert imageio.get_reader(path).count_frames() == 2
    viewer = VideoViewer(tmp_path)
    viewer.split.value = "eval"
    assert [label for label, _ in viewer.episode.options] == ["eval_iter_000000_task00_init00",
                                                              "eval_iter_000000_task02_init00"]


def test_evaluate_checkpoint_records_every_scored_episode(random_nano_checkpoint, tmp_path):
    # 3 pairs on 2 envs: the second round's spare env replays pair 0 unscored and is not written
    result = evaluate_checkpoint(str(random_nano_checkpoint), "tabletop_goal", num_episodes=3, num_envs=2,
                                 image_size=32, progress=False, video_dir=tmp_path)
    assert sorted(result.videos) == [(0, 0), (1, 0), (2, 0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tabletop_goal_task0{t}_init00.mp4" for t in range(3)]
    reader = imageio.get_reader(result.videos[(1, 0)])
    assert reader.get_meta_data()["size"] == (256, 128 + 48)  # 128 px main | wrist, banner below


def test_gallery_splits_successes_from_failures(tmp_path):
    paths = {}
    for pair, grey in {(0, 0): 10, (0, 1): 20, (1, 0): 30, (1, 1): 40}.items():
        paths[pair] = tmp_path / f"{pair}.mp4"
        encode_mp4([np.full((16, 16, 3), grey, np.uint8)], paths[pair], fps=10)
    result = EvalResult("tabletop_goal", successes={0: [True, False], 1: [False, False]},
                        descriptions={0: "open the drawer", 1: "close the drawer"}, videos=paths)
    title_ok, row_ok, title_bad, row_bad = episode_gallery(result, per_outcome=2).children
    assert "successes</b> (1 of 4 episodes)" in title_ok.value
    assert [cell.children[1].value for cell in row_ok.children] == [paths[(0, 0)].read_bytes()]
    assert "task 0 (open the drawer), init state 0" in row_ok.children[0].children[0].value
    assert "failures</b> (3 of 4 episodes, showing 2)" in title_bad.value
    assert [cell.children[1].value for cell in row_bad.children] == [paths[(0, 1)].read_bytes(),
                                                                     paths[(1, 0)].read_bytes()]
    with pytest.raises(ValueError, match="video_dir"):
        episode_gallery(EvalResult("tabletop_goal", successes={0: [True]}))


def test_task_bars_show_each_suites_tasks_with_counts():
    results = {"tabletop_goal": EvalResult("tabletop_goal", successes={0: [True, False], 3: [True, True]},
                                           descriptions={0: "open the drawer", 3: "turn on the stove"}),
               "tabletop_spatial": EvalResult("tabletop_spatial", successes={1: [False]}, descriptions={1: "pick"})}
    goal, spatial = task_success_figure(results).data
    assert goal.x == ("tabletop_goal<br>task 0", "tabletop_goal<br>task 3") and goal.y == (50.0, 100.0)
    assert goal.text == ("1/2", "2/2") and goal.hovertext == ("open the drawer", "turn on the stove")
    assert spatial.name == "tabletop_spatial" and spatial.y == (0.0,)
