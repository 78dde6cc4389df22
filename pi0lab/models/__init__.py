"""pi0 in plain PyTorch: SigLIP + Gemma blocks, the pi0 model with a KV-cached prefix, RL heads,
tokenizer, normalisation stats, checkpoint loading/saving, and the policy wrapper for envs/trainer."""

from pi0lab.models.checkpoint import CheckpointError, load_pi0, save_pi0
from pi0lab.models.config import CAMERAS, GemmaConfig, Pi0Config, SiglipConfig
from pi0lab.models.heads import NoiseHead, ValueHead
from pi0lab.models.normalize import NormStats, compute_norm_stats, load_norm_stats, normalize, save_norm_stats, unnormalize
from pi0lab.models.pi0 import Observation, Pi0, PrefixCache, resize_with_pad
from pi0lab.models.policy import Pi0Policy
from pi0lab.models.tokenizer import PaligemmaTokenizer, train_tokenizer

__all__ = [
    "CAMERAS",
    "CheckpointError",
    "GemmaConfig",
    "NoiseHead",
    "NormStats",
    "Observation",
    "PaligemmaTokenizer",
    "Pi0",
    "Pi0Config",
    "Pi0Policy",
    "PrefixCache",
    "SiglipConfig",
    "ValueHead",
    "compute_norm_stats",
    "load_norm_stats",
    "load_pi0",
    "normalize",
    "resize_with_pad",
    "save_norm_stats",
    "save_pi0",
    "train_tokenizer",
    "unnormalize",
]
