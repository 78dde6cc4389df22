"""The lab: live Plotly dashboards, hyperparameter widgets, inline videos and HTML reports.

Only notebooks and scripts import this layer; the library below never does.
"""

from pi0lab.lab.dashboard import LiveCurves, TrainingSession
from pi0lab.lab.plots import metric_figure, success_figure, task_success_figure
from pi0lab.lab.report import write_report
from pi0lab.lab.video import VideoViewer, episode_gallery, show_video
from pi0lab.lab.widgets import config_widgets

__all__ = ["LiveCurves", "TrainingSession", "VideoViewer", "config_widgets", "episode_gallery", "metric_figure",
           "show_video", "success_figure", "task_success_figure", "write_report"]
