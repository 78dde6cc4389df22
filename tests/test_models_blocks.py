"""Our Gemma layer and SigLIP tower against transformers' implementations with the same weights."""

import torch
from transformers import GemmaConfig as HFGemmaConfig
from transformers import SiglipVisionConfig, SiglipVisionModel
from transformers.models.gemma.modeling_gemma import GemmaDecoderLayer, GemmaRotaryEmbedding

from pi0lab.models.config import GemmaConfig, SiglipConfig
from pi0lab.models.gemma import GemmaLayer, joint_layer, mask_to_bias, rope_cos_sin
from pi0lab.models.siglip import SiglipVisionTower


def _randomize(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def test_gemma_layer_matches_transformers_decoder_layer():
    ours_cfg = GemmaConfig(width=48, depth=1, mlp_dim=96, num_heads=4, num_kv_heads=2, head_dim=16)
    hf_cfg = HFGemmaConfig(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=16, num_hidden_layers=1, hidden_activation="gelu_pytorch_tanh",
                           rms_norm_eps=1e-6, rope_theta=10000.0, attn_implementation="eager")
    hf = GemmaDecoderLayer(hf_cfg, layer_idx=0).eval()
    _randomize(hf, 0)
    ours = GemmaLayer(ours_cfg)
    ours.load_state_dict(hf.state_dict(), strict=True)

    b, length = 2, 7
    x = torch.randn(b, length, 48, generator=torch.Generator().manual_seed(1))
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [0, 0, 1, 2, 3, 4, 5]])
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool)).expand(b, length, length)
    hf_mask = torch.where(causal[:, None], 0.0, torch.finfo(torch.float32).min)
    cos_sin = GemmaRotaryEmbedding(hf_cfg)(x, positions)
    expected = hf(x, attention_mask=hf_mask, position_ids=positions, position_embeddings=cos_sin)
    expected = expected[0] if isinstance(expected, tuple) else expected

    cos, sin = rope_cos_sin(positions, 16)
    (got,), _ = joint_layer([ours], [x], cos, sin, mask_to_bias(causal))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_siglip_tower_matches_transformers_siglip_vision_model():
    hf_cfg = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                patch_size=8, image_size=32, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
                                vision_use_head=False)
    hf = SiglipVisionModel(hf_cfg).eval()
    _randomize(hf, 2)
    ours = SiglipVisionTower(SiglipConfig(width=32, depth=2, mlp_dim=64, num_heads=4, patch_size=8, image_size=32))
    ours.load_state_dict({k.removeprefix("vision_model."): v for k, v in hf.state_dict().items()}, strict=True)

    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    expected = hf(pixel_values=images).last_hidden_state
    torch.testing.assert_close(ours(images), expected, atol=1e-5, rtol=1e-5)
