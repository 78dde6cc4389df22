"""Atomic training checkpoints: a crash or Ctrl-C never leaves a half-written checkpoint.

Layout of a run directory:

    <run_dir>/checkpoints/step_000040/   one complete checkpoint (written elsewhere, then renamed in)
        state.pt                         step counter, optimiser states, RNG states, trainer extras
        model/                           the policy in pi0lab's format (`save_pi0`)
    <run_dir>/checkpoints/latest         the name of the newest complete checkpoint

A checkpoint directory is first written as `.tmp-step_000040`, then moved into place with one
`os.replace`, and only then does `latest` (itself replaced atomically) point to it.
"""

import os
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(ValueError):
    """A checkpoint file that is truncated, corrupt, or from another run layout."""


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states (what resuming needs to continue the same random stream)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary sibling of `path` (file or directory), then rename it to `path`."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    _remove(tmp)
    write(tmp)
    if path.exists():
        old = path.with_name(f".old-{path.name}")
        _remove(old)
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], save_model: Callable[[Path], None]) -> Path:
    """Write `state` (torch-serialisable) and the model (via `save_model(dir)`) as checkpoint `step`."""
    checkpoints = Path(run_dir) / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"

    def write(tmp: Path) -> None:
        tmp.mkdir()
        save_model(tmp / "model")
        torch.save({"step": step, **state}, tmp / "state.pt")

    write_atomically(checkpoints / name, write)
    write_atomically(checkpoints / "latest", lambda tmp: tmp.write_text(name + "\n"))
    return checkpoints / name


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None if it has none."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / "state.pt").is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which has no state.pt: the run directory is damaged")
    return path


def load_checkpoint_state(checkpoint: str | Path) -> dict[str, Any]:
    path = Path(checkpoint) / "state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a pi0lab training checkpoint (no state.pt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as err:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(err).__name__}: {str(err).splitlines()[0]}); "
                              "resume from an earlier checkpoint (point `latest` at it) or start a new run") from None
