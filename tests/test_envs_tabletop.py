"""The built-in tabletop: contract, expert, physics by hand, images, and tasks that need both the image and the instruction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from env_contract import check_vector_env_contract
from pi0lab.envs import TABLETOP_SUITES, make_env


@pytest.mark.parametrize("suite", TABLETOP_SUITES)
def test_tabletop_meets_the_contract(suite):
    env = make_env(suite, num_envs=3, seed=5)
    check_vector_env_contract(env, twin=make_env(suite, num_envs=3, seed=5), chunk=7)
