"""pi0 behaviour: attention layout, cached vs uncached sampling, padding invariance, learning."""

import math

import torch

from pi0lab.models import GemmaConfig, Observation, Pi0, Pi0Config, SiglipConfig
from pi0lab.models.pi0 import block_causal_mask, time_embedding

TINY = Pi0Config(
    vision=SiglipConfig(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=8, image_size=16),
    vlm=GemmaConfig(width=32, depth=2, mlp_dim=64, num_heads=2, num_kv_heads=1, head_dim=16),
    expert=GemmaConfig(width=24, depth=2, mlp_dim=48, num_heads=2, num_kv_heads=1, head_dim=16),
    vocab_size=64, action_dim=6, action_horizon=5, max_token_len=8,
)


def make_obs(config=TINY, batch=3, seed=0, lengths=(3, 8, 5)) -> Observation:
    gen = torch.Generator().manual_seed(seed)
    size, length = config.vision.image_size, config.max_token_len
    return Observation(
        images={c: torch.rand(batch, 3, size, size, generator=gen) * 2 - 1 for c in config.cameras},
        image_masks={c: torch.ones(batch, dtype=torch.bool) for c in config.cameras},
        state=torch.randn(batch, config.action_dim, generator=gen),
        tokens=torch.randint(1, config.vocab_size, (batch, length), generator=gen),
        token_mask=torch.arange(length)[None] < torch.tensor(lengths)[:, None],
    )


def model(seed=0, config=TINY) -> Pi0:
    torch.manual_seed(seed)
    m = Pi0(config).eval()
    with torch.no_grad():  # non-zero norm weights so every parameter matters
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def test_block_causal_mask_by_hand():
    # 2 prefix tokens (second is padding), state, 2 actions
    pad = torch.tensor([[True, False, True, True, True]])
    ar = torch.tensor([[0, 0, 1, 1, 0]])
    T, F = True, False
    expected = torch.tensor([[
        [T, F, F, F, F],  # prefix sees prefix
        [F, F, F, F, F],  # padding sees nothing
        [T, F, T, F, F],  # state sees prefix + itself
        [T, F, T, T, T],  # actions see everything valid
        [T, F, T, T, T],
    ]])
    assert torch.equal(block_causal_mask(pad, ar), expected)


def test_time_embedding_by_hand():
    t = torch.tensor([0.25])
    emb = time_embedding(t, 4, min_period=1.0, max_period=4.0)  # periods 1 and 4
    expected = [math.sin(2 * math.pi * 0.25), math.sin(2 * math.pi * 0.25 / 4),
                math.cos(2 * math.pi * 0.25), math.cos(2 * math.pi * 0.25 / 4)]
    torch.testing.assert_close(emb, torch.tensor([expected]))


def test_cached_and_uncached_sampling_agree():
    m, obs = model(), make_obs()
    noise = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(1))
    cached = m.sample_actions(obs, noise=noise, num_steps=4)
    uncached = m.sample_actions(obs, noise=noise, num_steps=4, use_cache=False)
    torch.testing.assert_close(cached, uncached, atol=1e-5, rtol=1e-5)


def test_denoise_step_does_not_modify_the_cache():
    m, obs = model(), make_obs()
    cache = m.prefill(obs)
    before = [(k.clone(), v.clone()) for k, v in cache.kv]
    x, t = torch.randn(3, 5, 6), torch.full((3,), 0.7)
    first = m.denoise_step(cache, obs.state, x, t)[0]
    second = m.denoise_step(cache, obs.state, x, t)[0]
    assert torch.equal(first, second)
    assert all(torch.equal(k, k0) and torch.equal(v, v0) for (k, v), (k0, v0) in zip(cache.kv, before))


def test_padding_content_and_masked_cameras_do_not_change_outputs():
    m, obs = model(), make_obs()
    obs.image_masks["right_wrist_0_rgb"][:] = False
    obs.image_masks["left_wrist_0_rgb"][0] = False
    noise, t = torch.randn(3, 5, 6), torch.tensor([0.2, 0.5, 0.9])
    v1 = m.forward_joint(obs, noise, t)[0]
    changed = make_obs(seed=0)
    changed.image_masks = obs.image_masks
    changed.images["right_wrist_0_rgb"] = torch.rand_like(changed.images["right_wrist_0_rgb"])
    changed.images["left_wrist_0_rgb"][0] = -1.0
    changed.tokens = torch.where(obs.token_mask, obs.tokens, torch.randint(0, 64, obs.tokens.shape))
    v2 = m.forward_joint(changed, noise, t)[0]
    assert torch.isfinite(v1).all()
    torch.testing.assert_close(v1, v2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.sample_actions(obs, noise=noise), m.sample_actions(changed, noise=noise),
                               atol=1e-5, rtol=1e-5)


def test_loss_is_elementwise_flow_matching_mse():
    m, obs = model(), make_obs()
    actions, noise, t = torch.randn(3, 5, 6), torch.randn(3, 5, 6), torch.tensor([0.1, 0.5, 1.0])
    loss = m.compute_loss(obs, actions, noise=noise, time=t)
    x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
    v = m.forward_joint(obs, x_t, t)[0]
    torch.testing.assert_close(loss, (noise - actions - v) ** 2)
    assert loss.shape == (3, 5, 6)


def test_nano_overfits_a_small_batch():
    """Fixed noise and times make the regression target fixed, so a working model drives the loss to ~0."""
    config = Pi0Config.nano(action_horizon=10, cameras=("base_0_rgb",))
    torch.manual_seed(0)
    m = Pi0(config).train()
    obs = make_obs(config, batch=2, lengths=(5, 12))
    gen = torch.Generator().manual_seed(0)
    actions = torch.randn(2, 10, config.action_dim, generator=gen).cumsum(1) * 0.3
    noise, t = torch.randn(actions.shape, generator=gen), torch.tensor([0.3, 0.8])
    optimizer = torch.optim.AdamW(m.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = m.compute_loss(obs, actions, noise=noise, time=t).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10
