"""pi0 in plain PyTorch: SigLIP + Gemma blocks, the pi0 model with a KV-cached prefix, RL heads,
tokenizer, normalisation stats, checkpoint loading/saving, and the policy wrapper for envs/trainer."""

from pi0lab.models.config import CAMERAS, GemmaConfig, Pi0Config, SiglipConfig
from pi0lab.models.heads import NoiseHead, ValueHead
from pi0lab.models.pi0 import Observation, Pi0, PrefixCache

__all__ = [
    "CAMERAS",
    "GemmaConfig",
    "NoiseHead",
    "Observation",
    "Pi0",
    "Pi0Config",
    "PrefixCache",
    "SiglipConfig",
    "ValueHead",
]
