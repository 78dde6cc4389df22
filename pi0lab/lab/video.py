"""Inline rollout videos in a notebook: one video, a viewer that picks an episode of a run, a gallery of an
evaluation's successes and failures.

The videos are the mp4 files the trainers write with `video_cfg.save_video` (main | wrist view, a banner with
the instruction, step, reward, return and success): `train_iter_<iteration>_env0.mp4` under
`env.train.video_cfg.video_base_dir` (one training episode per iteration) and
`eval_iter_<iteration>_task<t>_init<i>.mp4` under `env.eval.video_cfg.video_base_dir` (one file per episode).
"""

from pathlib import Path

import ipywidgets as widgets
from IPython.display import Video
from omegaconf import OmegaConf

from pi0lab.train.evaluate import EvalResult

SPLITS = ("train", "eval")


def show_video(data: bytes | str | Path, width: int = 512) -> Video:
    """An embedded mp4 (bytes, or the path of an .mp4 file) for display in a notebook cell."""
    if not isinstance(data, bytes):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"no video at {path}")
        data = path.read_bytes()
    return Video(data, embed=True, mimetype="video/mp4", width=width)


def video_dir(run_dir: Path, split: str) -> Path:
    """Where the run's `split` videos are: `env.<split>.video_cfg.video_base_dir` of its config.yaml.

    The saved config holds resolved paths; a directory under `runner.logger.log_path` is taken relative to
    `run_dir`, so a run moved elsewhere (or a relative log_path) still finds its videos.
    """
    cfg = OmegaConf.load(run_dir / "config.yaml")
    base, log_path = Path(cfg.env[split].video_cfg.video_base_dir), Path(cfg.runner.logger.log_path)
    return run_dir / base.relative_to(log_path) if base.is_relative_to(log_path) else base


def find_runs(root: Path) -> list[Path]:
    """Run directories (those holding a config.yaml) at or under `root`, sorted."""
    return sorted(p.parent for p in Path(root).rglob("config.yaml"))


class VideoViewer:
    """Pick a run under `root`, a split (train / eval) and an episode; the episode's video plays below.

    `run`, `split` and `episode` are the picking widgets (episode values are mp4 paths, labelled with the
    file name); `video` is the `ipywidgets.Video` showing it; Refresh rescans `root` (a run in progress
    writes new videos). Display the viewer itself, or `viewer.widget`.
    """

    def __init__(self, root: str | Path = "runs", width: int = 512):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no run directory at {self.root}: pass the folder that holds your runs")
        self.run = widgets.Dropdown(description="run", layout=widgets.Layout(width="60%"))
        self.split = widgets.ToggleButtons(options=SPLITS, description="split")
        self.episode = widgets.Dropdown(description="episode", layout=widgets.Layout(width="60%"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.video = widgets.Video(format="mp4", autoplay=True, loop=True, width=width)
        self.message = widgets.HTML()
        self._quiet = False  # set while options are rewritten, so observers do not react to the interim values
        self.run.observe(lambda _: self._quiet or self._list_episodes(), names="value")
        self.split.observe(lambda _: self._quiet or self._list_episodes(), names="value")
        self.episode.observe(lambda _: self._quiet or self._show(), names="value")
        self.refresh_button.on_click(lambda _: self.refresh())
        self.widget = widgets.VBox([widgets.HBox([self.run, self.refresh_button]), self.split, self.episode,
                                    self.message, self.video])
        self.refresh()

    def refresh(self) -> None:
        """Rescan the runs under `root`, keeping the picked run and episode when they are still there."""
        run, episode = self.run.value, self.episode.value
        runs = find_runs(self.root)
        self._quiet = True
        self.run.options = [(str(r.relative_to(self.root)) if r != self.root else ".", r) for r in runs]
        self.run.value = run if run in runs else (runs[0] if runs else None)
        self._quiet = False
        self._list_episodes(keep=episode)
        if not runs:
            self.message.value = f"no runs (directories with a config.yaml) under {self.root}"

    def _list_episodes(self, keep: Path | None = None) -> None:
        """Offer the picked run's videos of the picked split (first one picked, or `keep` if listed)."""
        files, folder = [], None
        if self.run.value is not None:
            folder = video_dir(self.run.value, self.split.value)
            files = sorted(folder.glob(f"{self.split.value}_*.mp4")) if folder.is_dir() else []
        self._quiet = True
        self.episode.options = [(f.stem, f) for f in files]
        self.episode.value = keep if keep in files else (files[0] if files else None)
        self._quiet = False
        self.message.value = f"no {self.split.value} videos in {folder} (video_cfg.save_video)" if folder and not files else ""
        self._show()

    def _show(self) -> None:
        self.video.value = self.episode.value.read_bytes() if self.episode.value is not None else b""

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def episode_gallery(result: EvalResult, per_outcome: int = 4, width: int = 256) -> widgets.Widget:
    """Up to `per_outcome` videos of successful and of failed episodes of an evaluation recorded with videos
    (`evaluate_checkpoint(..., video_dir=...)`), in two labelled rows, pairs in order."""
    if not result.videos:
        raise ValueError("this evaluation has no videos: run evaluate_checkpoint(..., video_dir=...)")
    rows = []
    for outcome, wanted in (("successes", True), ("failures", False)):
        picked = [pair for pair in sorted(result.videos) if result.success(*pair) == wanted][:per_outcome]
        cells = [widgets.VBox([widgets.HTML(f"task {task} ({result.descriptions[task]}), init state {init}"),
                               widgets.Video(value=result.videos[(task, init)].read_bytes(), format="mp4",
                                             autoplay=True, loop=True, width=width)],
                              layout=widgets.Layout(width=f"{width + 16}px"))
                 for task, init in picked]
        count = sum(result.success(*pair) == wanted for pair in result.videos)
        rows.append(widgets.HTML(f"<b>{result.suite}: {outcome}</b> ({count} of {len(result.videos)} episodes"
                                 + (f", showing {len(picked)})" if count > len(picked) else ")")))
        rows.append(widgets.HBox(cells, layout=widgets.Layout(flex_flow="row wrap")) if cells
                    else widgets.HTML("<i>none</i>"))
    return widgets.VBox(rows)
