"""Per-dataset normalisation of state and actions (openpi's z-score convention).

    normalize(x) = (x - mean) / (std + 1e-6)      unnormalize(y) = y * (std + 1e-6) + mean

Stats cover the robot's real dims (LIBERO: state 8, actions 7); the model sees them zero-padded to
its `action_dim`. Files use openpi's `norm_stats.json` layout:
{"norm_stats": {"state": {"mean": [...], "std": [...], "q01": [...], "q99": [...]}, "actions": {...}}}.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

EPS = 1e-6


@dataclass
class NormStats:
    """Per-dimension statistics [D] (q01/q99 optional: openpi uses them for quantile normalisation)."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray | None = None
    q99: np.ndarray | None = None

    def __post_init__(self):
        for name in ("mean", "std", "q01", "q99"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.asarray(value, dtype=np.float32).reshape(-1))
        if self.mean.shape != self.std.shape:
            raise ValueError(f"mean {self.mean.shape} and std {self.std.shape} must have the same length")

    @property
    def dim(self) -> int:
        return self.mean.shape[0]


def compute_norm_stats(values: np.ndarray) -> NormStats:
    """Stats of samples [..., D] over every leading axis (std is the population std, as openpi)."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1, np.shape(values)[-1])
    if flat.shape[0] < 2:
        raise ValueError(f"need at least 2 samples to compute norm stats, got {flat.shape[0]}")
    return NormStats(mean=flat.mean(0), std=flat.std(0), q01=np.quantile(flat, 0.01, axis=0),
                     q99=np.quantile(flat, 0.99, axis=0))


def load_norm_stats(path: str | Path) -> dict[str, NormStats]:
    """Read an openpi norm_stats.json (or a directory holding one) -> {"state": ..., "actions": ...}."""
    path = Path(path)
    if path.is_dir():
        path = path / "norm_stats.json"
    if not path.exists():
        raise FileNotFoundError(f"no norm stats at {path}")
    data = json.loads(path.read_text())
    if "norm_stats" not in data:
        raise ValueError(f"{path} is not an openpi norm_stats.json (no top-level 'norm_stats' key)")
    return {name: NormStats(**{k: v for k, v in fields.items() if k in ("mean", "std", "q01", "q99")})
            for name, fields in data["norm_stats"].items()}


def save_norm_stats(path: str | Path, stats: dict[str, NormStats]) -> None:
    """Write stats in openpi's norm_stats.json layout."""
    def fields(s: NormStats) -> dict:
        return {k: getattr(s, k).tolist() for k in ("mean", "std", "q01", "q99") if getattr(s, k) is not None}

    Path(path).write_text(json.dumps({"norm_stats": {name: fields(s) for name, s in stats.items()}}, indent=2))


def normalize(x: Tensor, stats: NormStats, pad_to: int | None = None) -> Tensor:
    """[..., D] -> (x - mean) / (std + 1e-6), then zero-padded to `pad_to` dims."""
    if x.shape[-1] != stats.dim:
        raise ValueError(f"expected {stats.dim} dims (the stats' width), got {x.shape[-1]}")
    mean = torch.as_tensor(stats.mean, dtype=x.dtype, device=x.device)
    std = torch.as_tensor(stats.std, dtype=x.dtype, device=x.device)
    y = (x - mean) / (std + EPS)
    if pad_to is not None:
        y = torch.nn.functional.pad(y, (0, pad_to - stats.dim))
    return y


def unnormalize(y: Tensor, stats: NormStats) -> Tensor:
    """[..., >=D] -> first D dims * (std + 1e-6) + mean."""
    mean = torch.as_tensor(stats.mean, dtype=y.dtype, device=y.device)
    std = torch.as_tensor(stats.std, dtype=y.dtype, device=y.device)
    return y[..., : stats.dim] * (std + EPS) + mean
