"""Checkpoint layouts: each written under its real key names and file format, loaded strictly, outputs compared."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_models_pi0 import TINY, make_obs, model

from pi0lab.models import Pi0Config
from pi0lab.models.checkpoint import CheckpointError, load_pi0, save_pi0
from pi0lab.models.normalize import NormStats, load_norm_stats

PG = "paligemma_with_expert.paligemma."
OPENPI = {  # pi0lab prefix -> openpi PyTorch prefix (openpi/src/openpi/models_pytorch names)
    "vision.": PG + "model.vision_tower.vision_model.",
    "projector.": PG + "model.multi_modal_projector.linear.",
    "vlm.": PG + "model.language_model.",
    "embed_tokens.": PG + "lm_head.",  # tied embedding: saved once, as lm_head
    "expert.": "paligemma_with_expert.gemma_expert.model.",
}
LEROBOT_V03 = {
    "vision.": PG + "vision_tower.vision_model.",
    "projector.": PG + "multi_modal_projector.linear.",
    "vlm.": PG + "language_model.model.",
    "embed_tokens.": PG + "language_model.lm_head.",
    "expert.": "paligemma_with_expert.gemma_expert.model.",
}


def rename(state_dict, table, prefix=""):
    out = {}
    for key, value in state_dict.items():
        for ours, theirs in table.items():
            if key.startswith(ours):
                key = theirs + key[len(ours):]
                break
        out[prefix + key] = value.clone()
    return out


def with_unused_expert_head(state_dict, prefix=""):
    state_dict[prefix + "paligemma_with_expert.gemma_expert.lm_head.weight"] = torch.randn(TINY.vocab_size, 24)
    return state_dict


def assert_same_policy(a, b):
    obs, noise = make_obs(), torch.randn(3, 5, 6)
    torch.testing.assert_close(a.sample_actions(obs, noise=noise), b.sample_actions(obs, noise=noise), atol=0, rtol=0)


def openpi_dir(tmp_path, source):
    weights = with_unused_expert_head(rename(source.state_dict(), OPENPI))
    save_file(weights, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"action_dim": 6, "action_horizon": 5,
                                                      "paligemma_variant": "gemma_2b", "precision": "float32"}))
    stats = {"norm_stats": {"state": {"mean": [0.1] * 8, "std": [2.0] * 8, "q01": [-1] * 8, "q99": [1] * 8},
                            "actions": {"mean": [0.0] * 7, "std": [1.0] * 7, "q01": [-1] * 7, "q99": [1] * 7}}}
    (tmp_path / "assets" / "physical-intelligence" / "libero").mkdir(parents=True)
    (tmp_path / "assets" / "physical-intelligence" / "libero" / "norm_stats.json").write_text(json.dumps(stats))
    return tmp_path


def test_openpi_pytorch_checkpoint(tmp_path):
    source = model(1)
    loaded = load_pi0(openpi_dir(tmp_path, source), config=TINY)
    assert_same_policy(source, loaded)
    assert loaded.norm_stats["state"].dim == 8 and np.allclose(loaded.norm_stats["state"].std, 2.0)


def test_openpi_checkpoint_sizes_inferred_without_config(tmp_path):
    config = Pi0Config(vision=TINY.vision.__class__(width=32, depth=1, mlp_dim=64, num_heads=16, patch_size=8,
                                                    image_size=16),
                       vlm=TINY.vlm.__class__(width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8),
                       expert=TINY.expert.__class__(width=24, depth=2, mlp_dim=48, num_heads=8, num_kv_heads=1,
                                                    head_dim=8),
                       vocab_size=64, action_dim=6, action_horizon=5, max_token_len=48)
    source = model(2, config)
    save_file(rename(source.state_dict(), OPENPI), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"action_horizon": 5}))
    loaded = load_pi0(tmp_path)
    assert loaded.config == config


def test_lerobot_v04_checkpoint(tmp_path):
    source = model(3)
    save_file(with_unused_expert_head(rename(source.state_dict(), OPENPI, "model."), "model."),
              tmp_path / "model.safetensors")
    assert_same_policy(source, load_pi0(tmp_path, config=TINY))


def test_lerobot_v03_checkpoint_with_normalisation_buffers(tmp_path):
    source = model(4)
    weights = with_unused_expert_head(rename(source.state_dict(), LEROBOT_V03, "model."), "model.")
    weights["normalize_inputs.buffer_observation_state.mean"] = torch.full((8,), 0.5)
    weights["normalize_inputs.buffer_observation_state.std"] = torch.full((8,), 3.0)
    weights["normalize_targets.buffer_action.mean"] = torch.zeros(7)
    weights["normalize_targets.buffer_action.std"] = torch.ones(7)
    weights["unnormalize_outputs.buffer_action.mean"] = torch.zeros(7)
    weights["unnormalize_outputs.buffer_action.std"] = torch.ones(7)
    save_file(weights, tmp_path / "model.safetensors")
    loaded = load_pi0(tmp_path, config=TINY)
    assert_same_policy(source, loaded)
    assert np.allclose(loaded.norm_stats["state"].std, 3.0) and loaded.norm_stats["actions"].dim == 7


def test_rlinf_full_weights_with_heads_and_fsdp_prefixes(tmp_path):
    config = Pi0Config(**{**TINY.__dict__, "value_head": True, "noise_head": True})
    source = model(5, config)
    weights = rename({k: v for k, v in source.state_dict().items() if not k.startswith("noise_head.")}, OPENPI)
    for i, layer in enumerate((0, 2, 4)):  # RLinf's ExploreNoiseNet MLP names
        for p in ("weight", "bias"):
            weights[f"noise_head.mlp_logvar.moduleList.{i}.linear_1.{p}"] = source.noise_head.mlp[layer].get_parameter(p)
    weights["noise_head.logvar_min"] = torch.log(torch.tensor([0.08**2]))
    weights["noise_head.logvar_max"] = torch.log(torch.tensor([0.16**2]))
    wrapped = {"_fsdp_wrapped_module." + k.replace("paligemma_with_expert.", "paligemma_with_expert._fsdp_wrapped_module."):
               v.detach().clone() for k, v in weights.items()}
    torch.save(wrapped, tmp_path / "full_weights.pt")
    loaded = load_pi0(tmp_path, config=config)
    assert loaded.config.value_head and loaded.config.noise_head
    assert_same_policy(source, loaded)
    features = torch.randn(3, 5, 24)
    torch.testing.assert_close(loaded.value_head(features), source.value_head(features))
    torch.testing.assert_close(loaded.noise_head(features), source.noise_head(features))


def test_pi0lab_directory_round_trip(tmp_path):
    source = model(6)
    source.norm_stats = {"state": NormStats(mean=np.arange(8.0), std=np.ones(8)),
                         "actions": NormStats(mean=np.zeros(7), std=np.full(7, 0.5))}
    save_pi0(source, tmp_path / "ckpt", tokenizer_path="/data/paligemma_tokenizer.model")
    loaded = load_pi0(tmp_path / "ckpt")
    assert loaded.config == TINY and loaded.tokenizer_path == "/data/paligemma_tokenizer.model"
    assert np.array_equal(load_norm_stats(tmp_path / "ckpt")["state"].mean, np.arange(8.0))
    assert_same_policy(source, loaded)


def test_corrupted_key_names_the_missing_and_unexpected_keys(tmp_path):
    weights = rename(model(7).state_dict(), OPENPI)
    bad = PG + "model.language_model.layers.1.self_attn.q_proj.weight"
    weights[bad.replace("q_proj", "q_prj")] = weights.pop(bad)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as error:
        load_pi0(tmp_path, config=TINY)
    assert "vlm.layers.1.self_attn.q_proj.weight" in str(error.value)  # missing
    assert "vlm.layers.1.self_attn.q_prj.weight" in str(error.value)  # unexpected


def test_shape_mismatch_is_reported(tmp_path):
    weights = rename(model(8).state_dict(), OPENPI)
    weights["state_proj.weight"] = torch.zeros(24, 7)
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"state_proj.weight: checkpoint \(24, 7\) vs model \(24, 6\)"):
        load_pi0(tmp_path, config=TINY)


def test_missing_directory_contents_raise(tmp_path):
    with pytest.raises(CheckpointError, match="no weights"):
        load_pi0(tmp_path)
