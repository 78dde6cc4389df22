"""Videos (mp4 files and bytes, text banner) and expert demos (write, read, replay)."""

from __future__ import annotations

import json
import sys

import imageio.v2 as imageio
import numpy as np
import pytest

from pi0lab.envs import make_env
from pi0lab.envs.demos import read_demos, write_demos
from pi0lab.envs.tabletop.world import POS_STEP
from pi0lab.envs.video import VideoRecorder


def _record(recorder, steps=3):
    env = make_env("tabletop_goal", 2, image_size=32)
    recorder.add(env.reset(task_ids=[0, 1], init_state_ids=[0, 0]))
    for _ in range(steps):
        obs, rewards, _, _, info = env.step(env.expert_actions(1))
        recorder.add(obs, rewards, info)


def test_video_files_are_h264_mp4_with_one_frame_per_step(tmp_path):
    recorder = VideoRecorder(env_ids=[1], video_base_dir=tmp_path / "videos", with_wrist=True, view_size=64)
    _record(recorder)
    path = recorder.save("eval")[1]
    assert path == tmp_path / "videos" / "eval_env1.mp4"
    reader = imageio.get_reader(path)
    meta = reader.get_meta_data()
    assert meta["codec"] == "h264" and meta["size"] == (128, 64 + 48)
    assert reader.count_frames() == 4
    assert recorder.mp4_bytes(1)[4:8] == b"ftyp"


def test_without_the_ffmpeg_plugin_saving_a_video_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails as if not installed
    recorder = VideoRecorder(env_ids=[0], video_base_dir=tmp_path, view_size=64)
    _record(recorder, steps=1)
    with pytest.raises(ImportError, match="pip install imageio-ffmpeg.*save_video=false"):
        recorder.save("eval")
    assert not list(tmp_path.iterdir())  # no file in another format


def test_the_banner_carries_text_only_when_asked(tmp_path):
    with_text = VideoRecorder(env_ids=[0], view_size=64)
    without = VideoRecorder(env_ids=[0], view_size=64, info_on_video=False)
    _record(with_text, steps=1)
    _record(without, steps=1)
    frame = with_text.frames[0][-1]
    assert frame.shape == (64 + 48, 64, 3) and without.frames[0][-1].shape == (64, 64, 3)
    assert (frame[64:] > 200).any()  # white text on the black banner


def test_video_recorder_rejects_bad_input():
    with pytest.raises(ValueError, match="multiple of 16"):
        VideoRecorder(view_size=50)
    recorder = VideoRecorder(env_ids=[5])
    with pytest.raises(ValueError, match="env id 5 out of range"):
        _record(recorder, steps=0)
    with pytest.raises(ValueError, match="needs video_base_dir"):
        VideoRecorder().save("x")
    with pytest.raises(ValueError, match="no frames"):
        VideoRecorder().mp4_bytes(0)


def test_demos_round_trip_and_replay_to_the_same_observations(tmp_path):
    index_path = write_demos("tabletop_object", tmp_path, episodes_per_task=2, task_ids=[3, 7], image_size=16, num_envs=3)
    index = json.loads(index_path.read_text())
    assert [(e["task_id"], e["init_state_id"]) for e in index["episodes"]] == [(3, 49), (3, 48), (7, 49), (7, 48)]
    episodes = read_demos(tmp_path)
    assert len(episodes) == 4 and all(e["success"] for e in episodes)
    episode = episodes[2]
    length = episode["length"]
    assert episode["main_images"].shape == (length, 16, 16, 3) and episode["actions"].shape == (length, 7)
    assert episode["rewards"].sum() == 1 and episode["rewards"][-1] == 1
    assert episode["instruction"] == "pick up the blue bar and place it in the basket"
    # replaying the recorded actions from the same initial state sees the recorded observations
    env = make_env("tabletop_object", 1, image_size=16)
    obs = env.reset(task_ids=[7], init_state_ids=[49])
    for t in range(length):
        np.testing.assert_array_equal(obs["main_images"][0], episode["main_images"][t])
        np.testing.assert_array_equal(obs["states"][0], episode["states"][t])
        obs, _, terminated, _, _ = env.step(episode["actions"][t][None, None])
    assert terminated[0, 0]


def test_noisy_demos_execute_noise_but_store_the_clean_expert_action(tmp_path):
    write_demos("tabletop_spatial", tmp_path, episodes_per_task=3, task_ids=[2], image_size=16, noise_std=0.3, num_envs=3)
    episodes = read_demos(tmp_path)  # at this noise ~60% of recordings fail and are redone
    assert [(e["init_state_id"], e["success"]) for e in episodes] == [(49, True), (48, True), (47, True)]
    env = make_env("tabletop_spatial", 1, image_size=16)
    env.reset(task_ids=[2], init_state_ids=[49])  # before any noise the label is the expert's own action
    np.testing.assert_allclose(episodes[0]["actions"][0], env.expert_actions(1)[0, 0], atol=1e-6)
    residuals = []  # executed motion / POS_STEP - label = the noise, std 0.3, where nothing was clipped
    for e in episodes:
        moved = np.diff(e["states"][:, :3], axis=0) / POS_STEP
        label = e["actions"][:-1, :3]
        inside = np.abs(label) < 0.4
        residuals.append((moved - label)[inside])
    residuals = np.concatenate(residuals)
    assert len(residuals) > 50 and 0.22 < residuals.std() < 0.38
    with pytest.raises(ValueError, match="noise_std"):
        write_demos("tabletop_spatial", tmp_path, episodes_per_task=1, noise_std=-0.1)
    with pytest.raises(RuntimeError, match="failed 5 times on task 0, init state 49"):  # noise swamps the expert
        write_demos("tabletop_spatial", tmp_path, episodes_per_task=1, task_ids=[0], image_size=8, noise_std=20.0, num_envs=1)


def test_reading_a_wrong_directory_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_demos"):
        read_demos(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a pi0lab-demos v1 index"):
        read_demos(tmp_path)


def test_execution_noise_moves_only_the_arm_dims_and_stays_in_range():
    from pi0lab.envs.demos import with_execution_noise

    actions = np.zeros((50, 1, 7), np.float32)
    actions[..., 6] = 1.0
    actions[0, 0, 0] = 0.99
    executed = with_execution_noise(actions, 0.5, np.random.default_rng(0))
    assert executed is not actions and actions[1, 0, 1] == 0.0  # the input is left alone
    assert (executed[..., 6] == 1.0).all() and np.abs(executed[..., :6]).max() <= 1.0
    assert 0.3 < executed[..., :6].std() < 0.6  # the noise is there (std 0.5 before clipping)
    np.testing.assert_array_equal(with_execution_noise(actions, 0.0, np.random.default_rng(0)), actions)
