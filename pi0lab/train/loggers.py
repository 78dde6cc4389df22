"""Metric loggers: a JSONL file always, plus tensorboard / wandb / swanlab when listed.

`runner.logger.logger_backends` names the extra backends; wandb and swanlab are imported only when
listed, and a missing one is an error that says how to install it (never a silent skip).
"""

import json
import math
from pathlib import Path
from typing import Any

LOGGER_BACKENDS = ("tensorboard", "wandb", "swanlab")


class MetricLogger:
    """Writes `{"step": s, name: value, ...}` lines to `<log_dir>/metrics.jsonl` and to each backend."""

    def __init__(self, log_dir: str | Path, backends: list[str], project: str, experiment: str, config: dict | None = None):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.log_dir / "metrics.jsonl", "a")
        self._tensorboard = None
        self._wandb = None
        self._swanlab = None
        for backend in backends:
            if backend == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                self._tensorboard = SummaryWriter(str(self.log_dir / "tensorboard"))
            elif backend == "wandb":
                wandb = _import_backend("wandb")
                self._wandb = wandb.init(project=project, name=experiment, dir=str(self.log_dir), config=config, resume="allow")
            elif backend == "swanlab":
                swanlab = _import_backend("swanlab")
                self._swanlab = swanlab.init(project=project, experiment_name=experiment, logdir=str(self.log_dir), config=config)
            else:
                raise ValueError(f"unknown logger backend {backend!r}; valid: {', '.join(LOGGER_BACKENDS)}")

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar metrics at `step` (non-finite values are kept in JSONL as null)."""
        clean = {k: float(v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": step, **{k: (v if math.isfinite(v) else None) for k, v in clean.items()}}) + "\n")
        self._jsonl.flush()
        if self._tensorboard is not None:
            for name, value in clean.items():
                self._tensorboard.add_scalar(name, value, step)
            self._tensorboard.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)
        if self._swanlab is not None:
            self._swanlab.log(clean, step=step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._swanlab is not None:
            self._swanlab.finish()


def _import_backend(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise ImportError(
            f"runner.logger.logger_backends lists {name!r}, but {name} is not installed: "
            f"`pip install {name}`, or remove it from the list"
        ) from None


def read_metrics(log_dir: str | Path) -> list[dict[str, Any]]:
    """Read back every record of `<log_dir>/metrics.jsonl` (what the dashboards and reports plot); a last
    line another process is still writing (no newline yet) is left for the next read."""
    path = Path(log_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics.jsonl under {log_dir}: has a run written there yet?")
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line.strip()]
