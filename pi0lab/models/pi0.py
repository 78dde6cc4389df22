"""pi0: a flow-matching action expert attached to PaliGemma (openpi's model, plain PyTorch).

Token layout (one sequence, left to right):

    prefix = [image tokens of each camera] [prompt tokens]   -> VLM weights (Gemma 2B)
    suffix = [state token] [H action tokens]                 -> action-expert weights (Gemma 300M)

Block-causal attention from the autoregressive marks ar (cumsum c = cumsum(ar)): token i may see
token j iff c_j <= c_i and both are valid. Prefix ar = 0, state ar = 1, first action ar = 1, other
actions 0: the prefix sees the prefix, the state sees prefix + state, actions see everything.
Position ids = cumsum(valid) - 1, so padding does not advance positions.

Flow matching (openpi convention): x_t = t * noise + (1 - t) * actions, the network predicts
v ~ noise - actions; sampling integrates dx/dt = v from t = 1 (noise) to t = 0 with Euler steps.
Because the prefix never attends to the suffix, its keys/values are computed once per observation
(`prefill`) and every denoise step runs only the expert on the 1 + H suffix tokens (`denoise_step`).
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pi0lab.models.config import Pi0Config
from pi0lab.models.gemma import GemmaStack, joint_layer, mask_to_bias, rope_cos_sin
from pi0lab.models.heads import NoiseHead, ValueHead
from pi0lab.models.siglip import SiglipVisionTower


@dataclass
class Observation:
    """Model inputs (already preprocessed).

    images: camera -> [B,3,S,S] float in [-1,1]; image_masks: camera -> [B] bool (a missing camera
    entry means all valid); state: [B,A] normalised and zero-padded; tokens: [B,L] long;
    token_mask: [B,L] bool (False = padding).
    """

    images: dict[str, Tensor]
    image_masks: dict[str, Tensor]
    state: Tensor
    tokens: Tensor
    token_mask: Tensor

    @property
    def batch_size(self) -> int:
        return self.state.shape[0]


class PrefixCache(NamedTuple):
    """Rotated keys/values of the prefix for every layer ([B,K,P,D] each) and its validity [B,P].

    features [B,W]: one vector per observation, the mean over valid prefix tokens of what the last VLM
    layer's K/V projections read (its input, after its input norm). That is the deepest prefix state
    pi0's action loss trains: the last layer's own attention output and MLP feed nothing. None in a
    cache rebuilt from stored keys/values.
    """

    kv: list[tuple[Tensor, Tensor]]
    pad_mask: Tensor
    features: Tensor | None = None


def block_causal_mask(pad_mask: Tensor, ar_mask: Tensor) -> Tensor:
    """pad [B,L] bool, ar [B,L] int -> may-attend [B,L,L]: c_j <= c_i with c = cumsum(ar), both valid."""
    c = torch.cumsum(ar_mask, dim=1)
    causal = c[:, None, :] <= c[:, :, None]
    return causal & pad_mask[:, None, :] & pad_mask[:, :, None]


def time_embedding(time: Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> Tensor:
    """Sin-cos embedding of t [B] -> [B,dim] = [sin(2 pi t / p_k), cos(2 pi t / p_k)].

    Periods p_k = min * (max/min)^(k/(dim/2 - 1)), k = 0..dim/2-1; computed in float64 (as openpi),
    returned in t's dtype.
    """
    if dim % 2:
        raise ValueError(f"time embedding width must be even, got {dim}")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    angle = (1.0 / period * 2 * math.pi)[None, :] * time[:, None].double()  # [B,dim/2]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1).to(time.dtype)


def resize_with_pad(images: Tensor, size: int) -> Tensor:
    """Float images [B,3,H,W] in [-1,1] -> [B,3,size,size]: bilinear resize keeping the aspect ratio
    (r = max(H, W) / size, new sides int(H/r), int(W/r)), clamp to [-1,1], centre, pad with -1 (black).
    """
    height, width = images.shape[-2:]
    ratio = max(height / size, width / size)
    new_h, new_w = int(height / ratio), int(width / ratio)
    resized = F.interpolate(images, size=(new_h, new_w), mode="bilinear", align_corners=False).clamp(-1.0, 1.0)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    return F.pad(resized, (left, size - new_w - left, top, size - new_h - top), value=-1.0)


def sample_time(batch_size: int, device=None) -> Tensor:
    """Training times t = Beta(1.5, 1) * 0.999 + 0.001 in (0.001, 1]: more weight near t = 1 (noise)."""
    alpha = torch.tensor(1.5, dtype=torch.float32, device=device)
    beta = torch.tensor(1.0, dtype=torch.float32, device=device)
    return torch.distributions.Beta(alpha, beta).sample((batch_size,)) * 0.999 + 0.001


def sample_noise(shape: tuple[int, ...], device=None) -> Tensor:
    """Standard normal float32 noise (drawn like openpi, so seeded runs agree)."""
    return torch.normal(mean=0.0, std=1.0, size=shape, dtype=torch.float32, device=device)


class Pi0(nn.Module):
    """pi0 with `compute_loss`, `sample_actions`, and the pieces they are made of."""

    def __init__(self, config: Pi0Config):
        super().__init__()
        self.config = config
        width, expert_width = config.vlm.width, config.expert.width
        self.vision = SiglipVisionTower(config.vision)
        self.projector = nn.Linear(config.vision.width, width)
        self.embed_tokens = nn.Embedding(config.vocab_size, width)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.vlm = GemmaStack(config.vlm)
        self.expert = GemmaStack(config.expert)
        self.state_proj = nn.Linear(config.action_dim, expert_width)
        self.action_in_proj = nn.Linear(config.action_dim, expert_width)
        self.action_time_mlp_in = nn.Linear(2 * expert_width, expert_width)
        self.action_time_mlp_out = nn.Linear(expert_width, expert_width)
        self.action_out_proj = nn.Linear(expert_width, config.action_dim)
        if config.value_head:
            self.value_head = ValueHead(expert_width)
        if config.noise_head:
            self.noise_head = NoiseHead(expert_width, config.action_dim, config.noise_std_range)
        self.norm_stats = None  # dict[str, NormStats] when loaded from a checkpoint that has them
        self.tokenizer_path = None  # SentencePiece model the prompts use (None = the one shipped with pi0lab)

    # ----------------------------------------------------------------------------- embeddings

    def check_observation(self, obs: Observation) -> None:
        c = self.config
        b = obs.state.shape[0]
        if obs.state.ndim != 2 or obs.state.shape[1] != c.action_dim:
            raise ValueError(f"state must be [B,{c.action_dim}] (normalised, zero-padded), got {tuple(obs.state.shape)}")
        if obs.tokens.shape != obs.token_mask.shape or obs.tokens.ndim != 2 or obs.tokens.shape[0] != b:
            raise ValueError(f"tokens and token_mask must both be [B,L], got {tuple(obs.tokens.shape)} "
                             f"and {tuple(obs.token_mask.shape)}")
        missing = [cam for cam in c.cameras if cam not in obs.images]
        if missing:
            raise ValueError(f"observation lacks cameras {missing}; the model expects {list(c.cameras)} "
                             f"(send a zero image with mask False for a camera you do not have)")

    def embed_prefix(self, obs: Observation) -> tuple[Tensor, Tensor, Tensor]:
        """Image tokens (SigLIP + projector) of each camera, then prompt tokens * sqrt(W).

        Images of another size are resized with padding first (as openpi's model does).

        Returns embeddings [B,P,W], valid [B,P] bool, ar marks [B,P] (all 0: one bidirectional block).
        """
        self.check_observation(obs)
        b = obs.batch_size
        embs, valid = [], []
        size = self.config.vision.image_size
        for camera in self.config.cameras:
            image = obs.images[camera]
            if image.ndim != 4 or image.shape[1] != 3:
                raise ValueError(f"images[{camera!r}] must be [B,3,H,W] in [-1,1], got {tuple(image.shape)}")
            if image.shape[-2:] != (size, size):
                image = resize_with_pad(image, size)
            tokens = self.projector(self.vision(image))  # [B,N,W]
            mask = obs.image_masks.get(camera, torch.ones(b, dtype=torch.bool, device=obs.state.device))
            embs.append(tokens)
            valid.append(mask.bool()[:, None].expand(b, tokens.shape[1]))
        language = self.embed_tokens(obs.tokens)
        embs.append(language * math.sqrt(language.shape[-1]))
        valid.append(obs.token_mask.bool())
        embs, valid = torch.cat(embs, dim=1), torch.cat(valid, dim=1)
        return embs, valid, torch.zeros_like(valid, dtype=torch.long)

    def embed_suffix(self, state: Tensor, x_t: Tensor, time: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """State token and H action tokens for the expert.

        state [B,A] -> state_proj -> 1 token; action token h = mlp_out(swish(mlp_in([W_in x_t[h], emb(t)]))).
        Returns embeddings [B,1+H,We], valid [B,1+H] (all True), ar marks [B,1+H] = [1, 1, 0, ..., 0].
        """
        b, horizon, _ = x_t.shape
        state_token = self.state_proj(state.float())[:, None]  # [B,1,We]
        actions = self.action_in_proj(x_t)  # [B,H,We]
        time_emb = time_embedding(time, actions.shape[-1])[:, None].expand_as(actions)  # [B,H,We]
        hidden = F.silu(self.action_time_mlp_in(torch.cat([actions, time_emb], dim=2)))
        action_tokens = self.action_time_mlp_out(hidden)
        embs = torch.cat([state_token, action_tokens], dim=1)
        valid = torch.ones(b, 1 + horizon, dtype=torch.bool, device=x_t.device)
        ar = torch.zeros(b, 1 + horizon, dtype=torch.long, device=x_t.device)
        ar[:, :2] = 1
        return embs, valid, ar

    # ----------------------------------------------------------------------------- transformer passes

    def _rope(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        return rope_cos_sin(positions, self.config.vlm.head_dim, self.config.vlm.rope_theta)

    def _action_outputs(self, suffix_hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Final expert norm, keep the H action tokens -> (velocity [B,H,A] fp32, features [B,H,We] fp32)."""
        features = self.expert.norm(suffix_hidden)[:, -self.config.action_horizon:].float()
        return self.action_out_proj(features), features

    def forward_joint(self, obs: Observation, x_t: Tensor, time: Tensor) -> tuple[Tensor, Tensor]:
        """One pass over prefix + suffix together (training; sampling without cache).

        x_t [B,H,A], time [B] -> (velocity [B,H,A], action-token features [B,H,We]).
        """
        prefix, prefix_valid, prefix_ar = self.embed_prefix(obs)
        suffix, suffix_valid, suffix_ar = self.embed_suffix(obs.state, x_t, time)
        valid = torch.cat([prefix_valid, suffix_valid], dim=1)
        bias = mask_to_bias(block_causal_mask(valid, torch.cat([prefix_ar, suffix_ar], dim=1)))
        cos, sin = self._rope(torch.cumsum(valid, dim=1) - 1)
        hiddens = [prefix, suffix]
        for vlm_layer, expert_layer in zip(self.vlm.layers, self.expert.layers, strict=True):
            hiddens, _ = joint_layer([vlm_layer, expert_layer], hiddens, cos, sin, bias)
        return self._action_outputs(hiddens[1])

    def prefill(self, obs: Observation) -> PrefixCache:
        """Run the VLM once over the prefix and keep every layer's rotated keys/values and the pooled
        features (see `PrefixCache`): f = sum_p valid_p norm(h_p) / sum_p valid_p, h = the last layer's input."""
        prefix, valid, ar = self.embed_prefix(obs)
        bias = mask_to_bias(block_causal_mask(valid, ar))
        cos, sin = self._rope(torch.cumsum(valid, dim=1) - 1)
        hiddens, kv = [prefix], []
        for layer in self.vlm.layers:
            layer_input = hiddens[0]
            hiddens, layer_kv = joint_layer([layer], hiddens, cos, sin, bias)
            kv.append(layer_kv)
        normed = self.vlm.layers[-1].input_layernorm(layer_input).float()  # [B,P,W]
        weights = valid.float()[..., None]  # [B,P,1]
        features = (normed * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)  # [B,W]
        return PrefixCache(kv=kv, pad_mask=valid, features=features)

    def denoise_step(self, cache: PrefixCache, state: Tensor, x_t: Tensor, time: Tensor) -> tuple[Tensor, Tensor]:
        """Expert-only pass of the suffix against the cached prefix (the cache is not modified).

        state [B,A], x_t [B,H,A], time [B] -> (velocity [B,H,A], action-token features [B,H,We]).
        Suffix queries see every valid prefix token plus the suffix's block-causal pattern;
        positions continue after the last valid prefix position.
        """
        suffix, valid, ar = self.embed_suffix(state, x_t, time)
        b, length = valid.shape
        prefix_part = cache.pad_mask[:, None, :].expand(b, length, cache.pad_mask.shape[1])
        bias = mask_to_bias(torch.cat([prefix_part, block_causal_mask(valid, ar)], dim=2))
        positions = cache.pad_mask.sum(dim=1, keepdim=True) + torch.cumsum(valid, dim=1) - 1
        cos, sin = self._rope(positions)
        hiddens = [suffix]
        for layer, layer_kv in zip(self.expert.layers, cache.kv, strict=True):
            hiddens, _ = joint_layer([layer], hiddens, cos, sin, bias, past_kv=layer_kv)
        return self._action_outputs(hiddens[0])

    # ----------------------------------------------------------------------------- public API

    def compute_loss(self, obs: Observation, actions: Tensor, noise: Tensor | None = None,
                     time: Tensor | None = None) -> Tensor:
        """Elementwise flow-matching loss [B,H,A] = (u - v)^2, u = noise - actions.

        actions [B,H,A] normalised; noise ~ N(0, I) and time ~ Beta(1.5,1)*0.999+0.001 when not given
        (drawn in that order); x_t = t * noise + (1 - t) * actions.
        """
        expected = (obs.batch_size, self.config.action_horizon, self.config.action_dim)
        if tuple(actions.shape) != expected:
            raise ValueError(f"actions must be {list(expected)} [B,H,A], got {list(actions.shape)}")
        if noise is None:
            noise = sample_noise(actions.shape, actions.device)
        if time is None:
            time = sample_time(actions.shape[0], actions.device)
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        target = noise - actions
        velocity, _ = self.forward_joint(obs, x_t, time)
        return F.mse_loss(target, velocity, reduction="none")

    @torch.no_grad()
    def sample_actions(self, obs: Observation, noise: Tensor | None = None, num_steps: int = 10,
                       use_cache: bool = True) -> Tensor:
        """Euler-integrate the flow from noise (t=1) to actions (t=0) -> [B,H,A] (normalised).

        Time is a float32 accumulator (dt = -1/N; t = 1; t += dt), as openpi steps it.
        use_cache=False recomputes the whole prefix at every step (same result, slower).
        """
        b = obs.batch_size
        shape = (b, self.config.action_horizon, self.config.action_dim)
        if noise is None:
            noise = sample_noise(shape, obs.state.device)
        if tuple(noise.shape) != shape:
            raise ValueError(f"noise must be {list(shape)} [B,H,A], got {list(noise.shape)}")
        cache = self.prefill(obs) if use_cache else None
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32, device=noise.device)
        t = torch.tensor(1.0, dtype=torch.float32, device=noise.device)
        x_t = noise
        while t >= -dt / 2:
            time = t.expand(b)
            if use_cache:
                velocity, _ = self.denoise_step(cache, obs.state, x_t, time)
            else:
                velocity, _ = self.forward_joint(obs, x_t, time)
            x_t = x_t + dt * velocity
            t = t + dt
        return x_t

    def num_parameters(self) -> dict[str, int]:
        """Parameter count per part: vision, projector, embedding, vlm, expert, action heads, rl heads."""
        parts = {"vision": self.vision, "projector": self.projector, "embedding": self.embed_tokens,
                 "vlm": self.vlm, "expert": self.expert}
        counts = {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}
        counts["action_io"] = sum(p.numel() for name in ("state_proj", "action_in_proj", "action_time_mlp_in",
                                                        "action_time_mlp_out", "action_out_proj")
                                  for p in getattr(self, name).parameters())
        counts["rl_heads"] = sum(p.numel() for name in ("value_head", "noise_head") if hasattr(self, name)
                                 for p in getattr(self, name).parameters())
        return counts
