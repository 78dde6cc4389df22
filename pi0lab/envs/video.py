"""Rollout videos: chosen envs' main view (optionally the wrist view beside it), an optional text
banner (instruction; step, the chunk's reward, the episode's return so far, success; the camera names),
encoded as mp4 (H.264, yuv420p) with imageio-ffmpeg.

    recorder = VideoRecorder(env_ids=[0, 3], video_base_dir="runs/videos", with_wrist=True)
    obs = env.reset(); recorder.add(obs)
    obs, rewards, terminated, truncated, info = env.step(actions); recorder.add(obs, rewards, info)
    paths = recorder.save("eval_step_100")          # {env_id: path of the mp4}
    IPython.display.Video(recorder.mp4_bytes(0), embed=True, mimetype="video/mp4")

A vector env renders once per chunk, so a video has one frame per `step` call (step with chunk 1 for
one frame per action). Frames are scaled up with nearest-neighbour to `view_size` pixels per camera.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw, ImageFont

BANNER_LINES = 3
LINE_HEIGHT = 14
BANNER_HEIGHT = 48  # >= BANNER_LINES * LINE_HEIGHT, a multiple of 16 (H.264 macro blocks)


def _upscale(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a square uint8 image [S,S,3] -> [size,size,3]."""
    index = np.arange(size) * image.shape[0] // size
    return image[index][:, index]


def _banner(width: int, lines: list[str]) -> np.ndarray:
    """White text on black: uint8 [BANNER_HEIGHT, width, 3]."""
    canvas = Image.new("RGB", (width, BANNER_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row, text in enumerate(lines[:BANNER_LINES]):
        draw.text((4, 2 + row * LINE_HEIGHT), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def _label(view: np.ndarray, name: str) -> np.ndarray:
    """The view with `name` in white on a black box in its top-left corner."""
    canvas = Image.fromarray(view)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((3, 1), name, font=font)
    draw.rectangle((0, 0, right + 3, bottom + 2), fill=(0, 0, 0))
    draw.text((3, 1), name, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


def compose_frame(main: np.ndarray, wrist: np.ndarray | None, view_size: int, text: list[str] | None) -> np.ndarray:
    """One video frame: [main | wrist] scaled to view_size each; with text, each view is labelled with its
    camera's name and the text banner goes below."""
    views = [_upscale(main, view_size)] + ([_upscale(wrist, view_size)] if wrist is not None else [])
    if text is not None:
        views = [_label(view, name) for view, name in zip(views, ("main", "wrist"))]
    frame = np.concatenate(views, axis=1)
    if text is not None:
        frame = np.concatenate([frame, _banner(frame.shape[1], text)], axis=0)
    return frame


def encode_mp4(frames: list[np.ndarray], path: str | os.PathLike, fps: int) -> None:
    """Write uint8 frames [H,W,3] (H, W multiples of 16) as H.264 mp4."""
    if not frames:
        raise ValueError("no frames to encode: call add() after reset() and step()")
    try:
        import imageio_ffmpeg  # noqa: F401  (imageio's FFMPEG plugin; without it imageio picks another writer)
    except ImportError:
        raise ImportError("writing mp4 videos needs imageio-ffmpeg: pip install imageio-ffmpeg, "
                          "or set env.*.video_cfg.save_video=false") from None
    with imageio.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                            macro_block_size=16) as writer:
        for frame in frames:
            writer.append_data(frame)


class VideoRecorder:
    """Collects frames of chosen envs of a vector env and writes one mp4 per env."""

    def __init__(self, env_ids=(0,), video_base_dir: str | os.PathLike | None = None, info_on_video: bool = True,
                 with_wrist: bool = False, view_size: int = 256, fps: int = 10):
        if view_size % 16:
            raise ValueError(f"view_size must be a multiple of 16 (H.264 macro blocks); got {view_size}")
        self.env_ids = list(env_ids)
        self.video_base_dir = Path(video_base_dir) if video_base_dir is not None else None
        self.info_on_video = info_on_video
        self.with_wrist = with_wrist
        self.view_size = view_size
        self.fps = fps
        self.frames: dict[int, list[np.ndarray]] = {i: [] for i in self.env_ids}

    def add(self, obs: dict, rewards: np.ndarray | None = None, info: dict | None = None) -> None:
        """Append one frame per chosen env from a vector obs (after `reset`: no rewards / info)."""
        num_envs = len(obs["main_images"])
        for i in self.env_ids:
            if not 0 <= i < num_envs:
                raise ValueError(f"env id {i} out of range: the env has {num_envs} envs")
            text = None
            if self.info_on_video:
                step = int(info["episode_len"][i]) if info is not None else 0
                reward = float(np.sum(rewards[i])) if rewards is not None else 0.0
                episode_return = float(info["return"][i]) if info is not None else 0.0
                success = bool(info["success_once"][i]) if info is not None else False
                instruction = textwrap.wrap(obs["task_descriptions"][i], width=self.view_size * (1 + self.with_wrist) // 6)
                text = instruction[: BANNER_LINES - 1] + [f"step {step}  reward {reward:.1f}  return {episode_return:.1f}  "
                                                          f"success {'yes' if success else 'no'}"]
            wrist = obs["wrist_images"][i] if self.with_wrist else None
            self.frames[i].append(compose_frame(obs["main_images"][i], wrist, self.view_size, text))

    def save(self, name: str) -> dict[int, Path]:
        """Write `<video_base_dir>/<name>_env<i>.mp4` for each chosen env; return the paths."""
        if self.video_base_dir is None:
            raise ValueError("save() needs video_base_dir; use mp4_bytes() for inline display")
        self.video_base_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for i in self.env_ids:
            paths[i] = self.video_base_dir / f"{name}_env{i}.mp4"
            encode_mp4(self.frames[i], paths[i], self.fps)
        return paths

    def mp4_bytes(self, env_id: int) -> bytes:
        """The mp4 of one env as bytes, e.g. for IPython.display.Video(data, embed=True, mimetype="video/mp4")."""
        if env_id not in self.frames:
            raise ValueError(f"env {env_id} is not recorded; recorded envs: {self.env_ids}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "video.mp4"
            encode_mp4(self.frames[env_id], path, self.fps)
            return path.read_bytes()

    def clear(self) -> None:
        """Drop the collected frames (start the next video)."""
        self.frames = {i: [] for i in self.env_ids}
