"""Parity with openpi's own PyTorch model on a checkpoint it wrote.

tests/data/openpi_tiny was produced by openpi's `PI0Pytorch` (src/openpi/models_pytorch, transformers
4.53.2 with openpi's transformers_replace files, float32) at a tiny size: SigLIP width 32 / 2 layers /
4 heads / mlp 64 / patch 14 / 28 px, Gemma VLM width 32 / 2 layers / mlp 64, expert width 24 / mlp 48
(8 query heads, 1 KV head, head_dim 8 as openpi requires), vocab 64, action_dim 32, horizon 10.
The weights were saved with `safetensors.torch.save_model` as openpi's trainer does; reference.safetensors
holds the inputs and openpi's outputs (observation preprocessing without training augmentation):
  loss                     forward(obs, actions, noise, time)            [B,H,A]
  actions_sampled          sample_actions(obs, noise, num_steps=10)
  actions_sampled_resized  same with 20x26 images (openpi resizes with padding inside the model)
  loss_seed5               torch.manual_seed(5); forward(obs, actions)   (noise and time drawn inside)
  actions_seed6_3steps     torch.manual_seed(6); sample_actions(obs, num_steps=3)
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pi0lab.models import CAMERAS, GemmaConfig, Observation, Pi0Config, SiglipConfig, load_pi0

DATA = Path(__file__).parent / "data" / "openpi_tiny"
CONFIG = Pi0Config(
    vision=SiglipConfig(width=32, depth=2, mlp_dim=64, num_heads=4, patch_size=14, image_size=28),
    vlm=GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8),
    expert=GemmaConfig(width=24, depth=2, mlp_dim=48, num_heads=8, num_kv_heads=1, head_dim=8),
    vocab_size=64, action_dim=32, action_horizon=10, max_token_len=12,
)


@pytest.fixture(scope="module")
def setup():
    ref = load_file(DATA / "reference.safetensors")
    model = load_pi0(DATA, config=CONFIG, strict=True).eval()

    def obs(images="images"):
        return Observation(images={c: ref[f"{images}.{c}"] for c in CAMERAS},
                           image_masks={c: ref[f"image_masks.{c}"] for c in CAMERAS},
                           state=ref["state"], tokens=ref["tokens"], token_mask=ref["token_mask"])

    return model, ref, obs


def test_loss_matches_openpi(setup):
    model, ref, obs = setup
    with torch.no_grad():
        loss = model.compute_loss(obs(), ref["actions"], noise=ref["noise"], time=ref["time"])
    torch.testing.assert_close(loss, ref["loss"], atol=1e-4, rtol=1e-4)


def test_sampled_actions_match_openpi(setup):
    model, ref, obs = setup
    for use_cache in (True, False):
        actions = model.sample_actions(obs(), noise=ref["noise"], num_steps=10, use_cache=use_cache)
        torch.testing.assert_close(actions, ref["actions_sampled"], atol=1e-4, rtol=1e-4)
    resized = model.sample_actions(obs("images2"), noise=ref["noise"], num_steps=5)
    torch.testing.assert_close(resized, ref["actions_sampled_resized"], atol=1e-4, rtol=1e-4)


def test_random_noise_and_time_are_drawn_like_openpi(setup):
    model, ref, obs = setup
    with torch.no_grad():
        torch.manual_seed(5)
        loss = model.compute_loss(obs(), ref["actions"])
        torch.manual_seed(6)
        actions = model.sample_actions(obs(), num_steps=3)
    torch.testing.assert_close(loss, ref["loss_seed5"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(actions, ref["actions_seed6_3steps"], atol=1e-4, rtol=1e-4)


def test_sizes_are_inferred_from_the_openpi_files(setup):
    inferred = load_pi0(DATA, config=None).config  # SigLIP heads cannot be read from weights: default 16
    assert inferred.vlm == CONFIG.vlm and inferred.expert == CONFIG.expert
    assert inferred.action_horizon == 10 and inferred.vocab_size == 64
    assert (inferred.vision.width, inferred.vision.patch_size, inferred.vision.image_size) == (32, 14, 28)
