"""Shared fixtures."""

import numpy as np
import pytest
import torch

from pi0lab.models import Pi0
from pi0lab.models.checkpoint import save_pi0
from pi0lab.models.normalize import NormStats
from pi0lab.train.config import load_config
from pi0lab.train.sft import fresh_model_config


@pytest.fixture(scope="session")
def random_nano_checkpoint(tmp_path_factory):
    """A randomly initialised CPU-sized nano (tabletop_sft_nano's shape) with unit norm stats, in pi0lab's format."""
    torch.manual_seed(0)
    model = Pi0(fresh_model_config(load_config("tabletop_sft_nano")))
    model.norm_stats = {"state": NormStats(np.zeros(8), np.ones(8)), "actions": NormStats(np.zeros(7), np.ones(7))}
    return save_pi0(model, tmp_path_factory.mktemp("random_nano") / "model")
