"""Gemma decoder blocks, written so that several experts can share one attention per layer.

pi0 runs two Gemma stacks side by side (the VLM on the prefix tokens, the action expert on the
suffix tokens). Each layer: every expert normalises and projects its own tokens with its own
weights; queries/keys/values are concatenated along the sequence; RoPE; one attention; the output
is split back and each expert applies its own o_proj, residual, norm and GeGLU MLP.

Parameter names follow Hugging Face / openpi (`self_attn.q_proj`, `mlp.gate_proj`,
`input_layernorm`, ...) so checkpoints map one to one.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pi0lab.models.config import GemmaConfig

# Additive attention bias for a masked pair (openpi's value): finite, so a fully masked row
# (a padding query) gives a uniform softmax instead of NaN.
MASKED_BIAS = -2.3819763e38


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * (1 + w), statistics in float32; w starts at 0."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        var = x.float().square().mean(dim=-1, keepdim=True)  # [*, 1]
        normed = x * torch.rsqrt(var + self.eps)
        return (normed * (1.0 + self.weight.float())).to(x.dtype)


class GemmaMLP(nn.Module):
    """GeGLU: down(gelu_tanh(gate(x)) * up(x)), no biases."""

    def __init__(self, width: int, mlp_dim: int):
        super().__init__()
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class GemmaAttention(nn.Module):
    """Projections of grouped-query attention: num_heads queries share num_kv_heads keys/values."""

    def __init__(self, config: GemmaConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.q_proj = nn.Linear(config.width, config.num_heads * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.width, config.num_kv_heads * config.head_dim, bias=False)
        self.v_proj = nn.Linear(config.width, config.num_kv_heads * config.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_heads * config.head_dim, config.width, bias=False)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B,L,W] -> q [B,H,L,D], k [B,K,L,D], v [B,K,L,D]."""
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v


class GemmaLayer(nn.Module):
    """Pre-norm decoder layer: x += o(attn(norm(x))); x += mlp(norm(x))."""

    def __init__(self, config: GemmaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.width, config.rms_norm_eps)
        self.self_attn = GemmaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.width, config.rms_norm_eps)
        self.mlp = GemmaMLP(config.width, config.mlp_dim)


class GemmaStack(nn.Module):
    """The decoder layers and the final norm of one expert (no token embedding: pi0 feeds embeddings)."""

    def __init__(self, config: GemmaConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(GemmaLayer(config) for _ in range(config.depth))
        self.norm = RMSNorm(config.width, config.rms_norm_eps)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Rotary tables for integer positions [B,L] -> cos, sin [B,L,D] (float32).

    inv_freq_i = theta^(-2i/D), angle = pos * inv_freq, tables = [angle, angle] (half-split layout).
    """
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (theta**exponent)  # [D/2]
    angle = positions.float()[..., None] * inv_freq  # [B,L,D/2]
    angle = torch.cat([angle, angle], dim=-1)  # [B,L,D]
    return angle.cos(), angle.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B,H,L,D] rotated: x*cos + rotate_half(x)*sin, rotate_half([a, b]) = [-b, a]."""
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    return x * cos + rotated * sin


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(D) + bias) v with grouped keys.

    q [B,H,Lq,D], k/v [B,K,Lk,D], bias [B,1,Lq,Lk] (0 or MASKED_BIAS) -> [B,Lq,H*D].
    """
    b, heads, length, dim = q.shape
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), enable_gqa=True)
    return out.transpose(1, 2).reshape(b, length, heads * dim)


def mask_to_bias(mask: Tensor) -> Tensor:
    """Boolean attention mask [B,Lq,Lk] (True = may attend) -> additive bias [B,1,Lq,Lk]."""
    return torch.where(mask[:, None], 0.0, MASKED_BIAS)


def joint_layer(
    layers: list[GemmaLayer],
    hiddens: list[Tensor],
    cos: Tensor,
    sin: Tensor,
    bias: Tensor,
    past_kv: tuple[Tensor, Tensor] | None = None,
) -> tuple[list[Tensor], tuple[Tensor, Tensor]]:
    """One layer over several experts' token groups with one shared attention.

    layers[e] processes hiddens[e] [B,L_e,W_e]; the groups are concatenated in order along the
    sequence (total L). cos/sin [B,L,D] are the rotary tables of those L tokens. `past_kv`
    (keys, values [B,K,P,D], already rotated) are P earlier tokens every query may look at,
    placed before the new ones; bias is [B,1,L,P+L].
    Returns the new hiddens and this layer's rotated (keys, values) of the L new tokens.
    """
    queries, keys, values = [], [], []
    for layer, hidden in zip(layers, hiddens, strict=True):
        q, k, v = layer.self_attn.project(layer.input_layernorm(hidden))
        queries.append(q)
        keys.append(k)
        values.append(v)
    q = apply_rope(torch.cat(queries, dim=2), cos, sin)
    k = apply_rope(torch.cat(keys, dim=2), cos, sin)
    v = torch.cat(values, dim=2)
    new_kv = (k, v)
    if past_kv is not None:
        k = torch.cat([past_kv[0], k], dim=2)
        v = torch.cat([past_kv[1], v], dim=2)
    attended = attention(q, k, v, bias)  # [B,L,H*D]

    outputs, start = [], 0
    for layer, hidden in zip(layers, hiddens, strict=True):
        end = start + hidden.shape[1]
        hidden = hidden + layer.self_attn.o_proj(attended[:, start:end].to(hidden.dtype))
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        outputs.append(hidden)
        start = end
    return outputs, new_kv
