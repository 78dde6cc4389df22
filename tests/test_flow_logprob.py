"""Gaussian log-probs / entropies against torch.distributions.Normal, and the chunk reduction by hand."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pi0lab.flow import chunk_logprob, gaussian_entropy, gaussian_logprob


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(1e-3, 10.0))
def test_logprob_and_entropy_agree_with_torch_normal(seed, scale):
    gen = torch.Generator().manual_seed(seed)
    x, mean = torch.randn(3, 4, 5, generator=gen), torch.randn(3, 4, 5, generator=gen)
    std = scale * (0.1 + torch.rand(3, 4, 5, generator=gen))
    normal = torch.distributions.Normal(mean, std)
    torch.testing.assert_close(gaussian_logprob(x, mean, std), normal.log_prob(x), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(gaussian_entropy(std), normal.entropy(), atol=1e-5, rtol=1e-5)


def test_logprob_hand_case_and_broadcast_std():
    # log N(1; 0, 2^2) = -log 2 - log sqrt(2 pi) - 1/8
    expected = -math.log(2) - 0.5 * math.log(2 * math.pi) - 0.125
    out = gaussian_logprob(torch.tensor([[1.0, 1.0]]), torch.zeros(1, 2), torch.tensor(2.0))
    torch.testing.assert_close(out, torch.full((1, 2), expected))
    torch.testing.assert_close(gaussian_logprob(torch.tensor([1.0]), 0.0, 2.0), torch.tensor([expected]))


def test_zero_std_entries_contribute_nothing_and_keep_gradients_finite():
    x = torch.tensor([0.3, 0.3, 5.0], requires_grad=True)
    mean = torch.tensor([0.0, 0.3, 1.0], requires_grad=True)
    std = torch.tensor([1.0, 0.0, 0.0])
    logprob = gaussian_logprob(x, mean, std)
    torch.testing.assert_close(logprob[1:], torch.zeros(2))
    torch.testing.assert_close(logprob[0], torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor(0.3)))
    logprob.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(mean.grad).all()
    assert torch.equal(x.grad[1:], torch.zeros(2))
    assert torch.equal(gaussian_entropy(torch.zeros(3)), torch.zeros(3))


def test_chunk_logprob_hand_case():
    # [B=2, H=3, A=4] with entries h*10 + d (+100 for the second row); chunk 2, action_dim 3:
    # row 0 sums (0+1+2) + (10+11+12) = 36; row 1 adds 6 * 100
    h = torch.arange(3)[:, None] * 10
    d = torch.arange(4)[None, :]
    logprobs = torch.stack([h + d, h + d + 100]).float()
    torch.testing.assert_close(chunk_logprob(logprobs, 2, 3), torch.tensor([36.0, 636.0]))
    torch.testing.assert_close(chunk_logprob(logprobs, 3, 4), logprobs.sum(dim=(1, 2)))
    # extra leading dims (e.g. per denoise step) are kept
    assert chunk_logprob(torch.ones(2, 5, 3, 4), 2, 3).shape == (2, 5)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="does not broadcast"):
        gaussian_logprob(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(1))
    with pytest.raises(ValueError, match=">= 0"):
        gaussian_logprob(torch.zeros(2), torch.zeros(2), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match=">= 0"):
        gaussian_entropy(torch.tensor([-1.0]))
    with pytest.raises(ValueError, match=r"chunk must be in \[1, H=3\]"):
        chunk_logprob(torch.zeros(2, 3, 4), 5, 2)
    with pytest.raises(ValueError, match=r"action_dim must be in \[1, A=4\]"):
        chunk_logprob(torch.zeros(2, 3, 4), 2, 0)
    with pytest.raises(ValueError, match=r"\[\*B,H,A\]"):
        chunk_logprob(torch.zeros(4), 1, 1)
