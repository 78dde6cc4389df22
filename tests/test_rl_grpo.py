"""GRPO episode scores, group advantages and group filtering."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pi0lab.rl import episode_scores, group_advantages, group_filter


def test_group_of_four_by_hand():
    # one success in four: mean 0.25, unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5
    # two in four: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 1/sqrt(3)
    scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    adv = group_advantages(scores, group_size=4, eps=0.0)
    half_root3 = np.sqrt(3) / 2
    expected = [1.5, -0.5, -0.5, -0.5, half_root3, half_root3, -half_root3, -half_root3]
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-12)
    centred = group_advantages(scores, group_size=4, std_normalize=False)
    np.testing.assert_allclose(centred.numpy(), [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5])


def test_eps_is_added_to_the_std():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), group_size=4, eps=0.5)
    torch.testing.assert_close(adv, torch.tensor([0.75, -0.25, -0.25, -0.25]) / 1.0)


def test_bool_success_scores_are_accepted():
    adv = group_advantages(torch.tensor([True, False, True, True]), group_size=2)
    assert adv.dtype == torch.get_default_dtype()
    assert adv[2:].tolist() == [0.0, 0.0]


groups_strategy = st.integers(1, 4).flatmap(
    lambda size: st.lists(
        st.lists(st.sampled_from([0.0, 0.25, 1.0, 3.0, -2.0]), min_size=size, max_size=size), min_size=1, max_size=5
    )
)


@settings(max_examples=80, deadline=None)
@given(groups_strategy, st.booleans())
def test_group_advantages_have_zero_mean_per_group_and_vanish_for_equal_groups(groups, std_normalize):
    size = len(groups[0])
    scores = torch.tensor([s for g in groups for s in g], dtype=torch.float64)
    adv = group_advantages(scores, size, std_normalize=std_normalize).reshape(-1, size)
    for group, a in zip(groups, adv):
        assert a.sum().item() == pytest.approx(0.0, abs=1e-9)
        if len(set(group)) == 1:
            assert a.tolist() == [0.0] * size
        elif std_normalize:
            assert a.std().item() == pytest.approx(1.0, rel=1e-4)  # eps=1e-6 against std >= 0.125


@settings(max_examples=40, deadline=None)
@given(groups_strategy, st.floats(-5, 5), st.floats(0.5, 4))
def test_normalised_group_advantages_ignore_shift_and_scale(groups, shift, scale):
    size = len(groups[0])
    scores = torch.tensor([s for g in groups for s in g], dtype=torch.float64)
    a = group_advantages(scores, size, eps=0.0)
    b = group_advantages(scores * scale + shift, size, eps=0.0)
    torch.testing.assert_close(a, b)


def test_group_filter_drops_all_success_and_all_fail_groups():
    scores = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0])
    keep = group_filter(scores, group_size=4)
    assert keep.tolist() == [False] * 8 + [True] * 8
    # bounds are inclusive: a mean of exactly 0.25 is kept with low=0.25, dropped with low=0.3
    assert group_filter(scores, 4, low=0.25, high=0.75).tolist() == [False] * 8 + [True] * 8
    assert group_filter(scores, 4, low=0.3, high=0.7).tolist() == [False] * 12 + [False] * 4


def test_episode_scores_stop_at_the_first_done():
    # env 0: reward at step 1 which ends the episode; a reward after the done is ignored.
    # env 1: never done, two rewards. env 2: the done flag in row 0 is not used.
    rewards = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 2.0], [5.0, 1.0, 0.0]])  # [T=3, B=3]
    dones = torch.tensor(
        [[False, False, True], [False, False, False], [True, False, False], [True, False, False]]
    )
    torch.testing.assert_close(episode_scores(rewards, dones), torch.tensor([1.0, 2.0, 2.0]))


@pytest.mark.parametrize(
    "call",
    [
        lambda: group_advantages(torch.zeros(6), group_size=4),
        lambda: group_filter(torch.zeros(10), group_size=8),
        lambda: group_advantages(torch.zeros(4, 2), group_size=2),
        lambda: episode_scores(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bool)),
    ],
)
def test_bad_input_raises_value_error_naming_the_shapes(call):
    with pytest.raises(ValueError, match=r"\[\d+(,\d+)*\]"):
        call()
