"""SigLIP vision tower (ViT without pooling head), as used by PaliGemma and pi0.

[B,3,S,S] in [-1,1] -> conv patch embedding (stride = patch) -> + learned positions ->
pre-LN transformer blocks (gelu-tanh MLP) -> final LayerNorm -> [B,(S/p)^2,W].
Parameter names follow Hugging Face's `SiglipVisionTransformer` (`embeddings.patch_embedding`,
`encoder.layers.N.self_attn.q_proj`, `post_layernorm`, ...).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pi0lab.models.config import SiglipConfig


class SiglipEmbeddings(nn.Module):
    def __init__(self, config: SiglipConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, config.width, kernel_size=config.patch_size, stride=config.patch_size)
        self.position_embedding = nn.Embedding(config.num_patches, config.width)

    def forward(self, images: Tensor) -> Tensor:
        """images [B,3,S,S] -> patch tokens + positions [B,N,W] (row-major patch order)."""
        patches = self.patch_embedding(images.to(self.patch_embedding.weight.dtype))  # [B,W,S/p,S/p]
        return patches.flatten(2).transpose(1, 2) + self.position_embedding.weight


class SiglipAttention(nn.Module):
    """Multi-head self-attention with biases, softmax(q k^T / sqrt(D)) v, no mask."""

    def __init__(self, config: SiglipConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.q_proj = nn.Linear(config.width, config.width)
        self.k_proj = nn.Linear(config.width, config.width)
        self.v_proj = nn.Linear(config.width, config.width)
        self.out_proj = nn.Linear(config.width, config.width)

    def forward(self, x: Tensor) -> Tensor:
        b, length, width = x.shape

        def heads(t: Tensor) -> Tensor:  # [B,N,W] -> [B,H,N,W/H]
            return t.view(b, length, self.num_heads, width // self.num_heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)))
        return self.out_proj(out.transpose(1, 2).reshape(b, length, width))


class SiglipMLP(nn.Module):
    def __init__(self, config: SiglipConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.width, config.mlp_dim)
        self.fc2 = nn.Linear(config.mlp_dim, config.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipLayer(nn.Module):
    """x += attn(LN1(x)); x += mlp(LN2(x))."""

    def __init__(self, config: SiglipConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.self_attn = SiglipAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, config: SiglipConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipLayer(config) for _ in range(config.depth))


class SiglipVisionTower(nn.Module):
    """[B,3,S,S] -> [B,(S/p)^2,W]."""

    def __init__(self, config: SiglipConfig):
        super().__init__()
        self.config = config
        self.embeddings = SiglipEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.embeddings.position_embedding.weight, std=0.02)

    def forward(self, images: Tensor) -> Tensor:
        size = self.config.image_size
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(f"expected images [B,3,{size},{size}], got {tuple(images.shape)}")
        x = self.embeddings(images)
        for layer in self.encoder.layers:
            x = layer(x)
        return self.post_layernorm(x)
