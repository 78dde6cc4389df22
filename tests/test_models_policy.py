"""Policy wrapper, tokenizer and normalisation: env dict in, env actions out, rollout/evaluate agreement."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_models_pi0 import TINY, model

from pi0lab.models import (NormStats, PaligemmaTokenizer, Pi0Config, Pi0Policy, compute_norm_stats,
                           load_norm_stats, normalize, resize_with_pad, save_norm_stats, unnormalize)

CONFIG = Pi0Config(**{**TINY.__dict__, "action_dim": 8, "vocab_size": 512, "max_token_len": 24, "value_head": True,
                      "noise_head": True})
STATS = {"state": NormStats(mean=np.linspace(-1, 1, 8), std=np.full(8, 2.0)),
         "actions": NormStats(mean=np.arange(7) * 0.1, std=np.full(7, 0.5))}


def env_obs(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"main_images": rng.integers(0, 256, (n, 20, 24, 3), dtype=np.uint8),
            "wrist_images": rng.integers(0, 256, (n, 20, 24, 3), dtype=np.uint8),
            "states": rng.normal(size=(n, 8)).astype(np.float32),
            "task_descriptions": ["put the red cube on the plate", "open the drawer of the cabinet",
                                  "stack the blue cube on the red cube", "turn on the stove"][:n]}


def policy(method="flow_sde", **kwargs):
    return Pi0Policy(model(0, CONFIG), STATS, action_chunk=3, action_env_dim=5, num_steps=4,
                     noise_method=method, **kwargs)


def test_tokenizer_prompt_format_and_special_ids():
    tok = PaligemmaTokenizer(max_len=16)
    tokens, mask = tok.tokenize(["  put_the red cube\n", "x" * 100])
    body = tok.sp.encode("put the red cube")
    assert tokens[0, : len(body) + 2].tolist() == [2] + body + tok.sp.encode("\n")
    assert mask[0].sum() == len(body) + 2 and (tokens[0][~mask[0]] == 0).all()
    assert mask[1].all()  # truncated to max_len
    assert (tok.sp.pad_id(), tok.sp.eos_id(), tok.sp.bos_id(), tok.sp.unk_id()) == (0, 1, 2, 3)
    assert tok.vocab_size <= Pi0Config.nano().vocab_size


def test_norm_stats_round_trip_and_openpi_file(tmp_path):
    values = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 10, 7))
    stats = compute_norm_stats(values)
    assert np.allclose(stats.mean, values.reshape(-1, 7).mean(0), atol=1e-5)
    x = torch.tensor(values[:5, 0], dtype=torch.float32)
    y = normalize(x, stats, pad_to=32)
    assert y.shape == (5, 32) and (y[:, 7:] == 0).all()
    torch.testing.assert_close(unnormalize(y, stats), x, atol=1e-5, rtol=1e-5)
    save_norm_stats(tmp_path / "norm_stats.json", {"actions": stats})
    assert np.allclose(load_norm_stats(tmp_path)["actions"].q99, stats.q99)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(4, 40), w=st.integers(4, 40))
def test_resize_with_pad_keeps_aspect_and_pads_black(h, w):
    out = resize_with_pad(torch.ones(1, 3, h, w), 16)
    assert out.shape == (1, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    ratio = max(h / 16, w / 16)
    assert (out[0, 0] > 0.99).sum().item() == int(h / ratio) * int(w / ratio)  # content; the rest is pad (-1)
    rows = (out[0, 0] > 0.99).any(dim=1).nonzero().flatten()
    assert rows[0].item() == (16 - int(h / ratio)) // 2  # centred, odd pixel of padding at the bottom


def test_preprocess_masks_missing_camera_and_pads_state():
    p = policy()
    obs = p.preprocess(env_obs())
    assert obs.image_masks["right_wrist_0_rgb"].tolist() == [False] * 4
    assert obs.image_masks["base_0_rgb"].all() and (obs.images["right_wrist_0_rgb"] == -1).all()
    expected = (torch.tensor(env_obs()["states"]) - torch.tensor(STATS["state"].mean).float()) / (2.0 + 1e-6)
    torch.testing.assert_close(obs.state[:, :8], expected)
    assert (obs.state[:, 8:] == 0).all()


@pytest.mark.parametrize("method", ["flow_sde", "reinflow", "cps"])
def test_evaluate_recomputes_rollout_logprobs_and_values(method):
    p = policy(method)
    out = p.rollout(env_obs(), generator=torch.Generator().manual_seed(0))
    assert out["actions"].shape == (4, 3, 5) and out["chain"].shape == (4, 5, 5, 8)
    again = p.evaluate(env_obs(), out["chain"], out["noisy_steps"])
    torch.testing.assert_close(again["logprobs"], out["logprobs"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(again["values"], out["values"], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(again["entropy"]).all()
    again["logprobs"].sum().backward()  # gradients reach the expert
    assert p.model.expert.layers[0].mlp.up_proj.weight.grad is not None


def test_rollout_actions_are_unnormalised_final_chain_state():
    p = policy()
    out = p.rollout(env_obs(), deterministic=True)
    final = out["chain"][:, -1, :3, :5]
    expected = final * (0.5 + 1e-6) + torch.tensor(STATS["actions"].mean[:5]).float()
    torch.testing.assert_close(out["actions"], expected)
    assert (out["logprobs"] == 0).all() and out["noisy_steps"].shape == (4, 0)


def test_train_expert_only_freezes_the_vlm():
    p = policy(train_expert_only=True)
    out = p.rollout(env_obs(2))
    p.evaluate(env_obs(2), out["chain"], out["noisy_steps"])["logprobs"].sum().backward()
    assert all(not q.requires_grad for q in p.model.vlm.parameters())
    assert all(not q.requires_grad for q in p.model.vision.parameters())
    assert p.model.action_out_proj.weight.grad is not None


def test_real_size_model_refuses_the_shipped_tokenizer():
    with pytest.raises(ValueError, match="paligemma_tokenizer.model"):
        Pi0Policy(model(0, Pi0Config(**{**TINY.__dict__, "vocab_size": 257152})), STATS)


def test_precision_is_checked_and_bf16_needs_cuda():
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        policy(precision="fp16")
    with pytest.raises(ValueError, match="needs the policy on a CUDA device, not cpu"):
        policy(precision="bf16").rollout(env_obs(2))


def test_zero_initial_noise_makes_the_ode_deterministic_and_the_sde_random_only_in_its_noisy_steps():
    def ode(p, seed):
        return p.rollout(env_obs(), deterministic=True, generator=torch.Generator().manual_seed(seed))

    zero, gaussian = policy(initial_noise="zero"), policy(initial_noise="gaussian")
    assert (ode(zero, 0)["chain"][:, 0] == 0).all()
    torch.testing.assert_close(ode(zero, 0)["actions"], ode(zero, 1)["actions"])
    assert not torch.allclose(ode(gaussian, 0)["actions"], ode(gaussian, 1)["actions"])
    sde = zero.rollout(env_obs(), generator=torch.Generator().manual_seed(0))
    again = zero.evaluate(env_obs(), sde["chain"], sde["noisy_steps"])
    torch.testing.assert_close(again["logprobs"], sde["logprobs"], atol=1e-4, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown initial_noise 'uniform'"):
        policy(initial_noise="uniform")
