import math
import sys

import pytest

from pi0lab.train.loggers import MetricLogger, read_metrics


def test_jsonl_and_tensorboard_records(tmp_path):
    logger = MetricLogger(tmp_path, ["tensorboard"], "p", "e")
    logger.log({"actor/loss": 0.5, "env/success_once": 1}, step=1)
    logger.log({"actor/loss": math.nan}, step=2)
    logger.close()
    assert read_metrics(tmp_path) == [
        {"step": 1, "actor/loss": 0.5, "env/success_once": 1.0},
        {"step": 2, "actor/loss": None},
    ]
    assert any((tmp_path / "tensorboard").iterdir())


def test_missing_backend_is_an_error_that_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    with pytest.raises(ImportError, match="pip install wandb"):
        MetricLogger(tmp_path, ["wandb"], "p", "e")
    with pytest.raises(ValueError, match="unknown logger backend"):
        MetricLogger(tmp_path, ["mlflow"], "p", "e")
