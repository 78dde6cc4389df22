"""The lab: live Plotly dashboards, hyperparameter widgets and studies, inline videos and HTML reports.

Only notebooks and scripts import this layer; the library below never does.
"""

from pi0lab.lab.dashboard import LiveCurves, TrainingSession
from pi0lab.lab.pbt import PopulationTraining, lineage_figure
from pi0lab.lab.pbt_panel import PopulationPanel
from pi0lab.lab.placement import PlacementForm, placement_grid, timeline_figure
from pi0lab.lab.plots import metric_figure, success_figure, task_success_figure
from pi0lab.lab.report import write_report
from pi0lab.lab.study import TuningStudy
from pi0lab.lab.tuning import TuningPanel
from pi0lab.lab.video import VideoViewer, episode_gallery, show_video
from pi0lab.lab.widgets import SearchSpaceWidgets, config_widgets

__all__ = ["LiveCurves", "PlacementForm", "PopulationPanel", "PopulationTraining", "SearchSpaceWidgets", "TrainingSession", "TuningPanel",
           "TuningStudy", "VideoViewer", "config_widgets", "episode_gallery", "lineage_figure", "metric_figure",
           "placement_grid", "show_video", "success_figure", "task_success_figure", "timeline_figure", "write_report"]
