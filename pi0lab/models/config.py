"""Model sizes: SigLIP tower, the two Gemma stacks (VLM and action expert) and pi0 itself.

`Pi0Config.pi0()` is the published model (3.24B parameters); `Pi0Config.nano()` is a CPU-sized
model with the same architecture (64-px images, a few million parameters). Any other size is a
`Pi0Config(...)` with the sub-configs you want.
"""

from dataclasses import asdict, dataclass, field, replace

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
PALIGEMMA_VOCAB_SIZE = 257152


@dataclass(frozen=True)
class SiglipConfig:
    """SigLIP vision tower. So400m/14 by default: [B,3,224,224] -> [B,256,1152]."""

    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    layer_norm_eps: float = 1e-6

    def __post_init__(self):
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.width % self.num_heads:
            raise ValueError(f"SigLIP width {self.width} must be divisible by num_heads {self.num_heads}")

    @property
    def num_patches(self) -> int:
        """Tokens per image: (image_size / patch_size)^2."""
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class GemmaConfig:
    """One Gemma decoder stack. Gemma 2B by default (the VLM); `gemma_300m()` is the action expert."""

    width: int = 2048
    depth: int = 18
    mlp_dim: int = 16384
    num_heads: int = 8
    num_kv_heads: int = 1
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}")

    @classmethod
    def gemma_2b(cls) -> "GemmaConfig":
        return cls()

    @classmethod
    def gemma_300m(cls) -> "GemmaConfig":
        return cls(width=1024, mlp_dim=4096)


@dataclass(frozen=True)
class Pi0Config:
    """pi0 = SigLIP + projector + Gemma VLM (prefix) and a Gemma action expert (suffix) sharing attention.

    `action_dim` is the padded state/action width (32 for released checkpoints); `action_horizon`
    the chunk length H; `max_token_len` the prompt length L. `cameras` fixes the order in which
    images enter the prefix. `value_head` / `noise_head` add the RL heads (see `heads.py`);
    `noise_std_range` bounds the ReinFlow noise head's std.
    """

    vision: SiglipConfig = field(default_factory=SiglipConfig)
    vlm: GemmaConfig = field(default_factory=GemmaConfig.gemma_2b)
    expert: GemmaConfig = field(default_factory=GemmaConfig.gemma_300m)
    vocab_size: int = PALIGEMMA_VOCAB_SIZE
    action_dim: int = 32
    action_horizon: int = 50
    max_token_len: int = 48
    cameras: tuple[str, ...] = CAMERAS
    value_head: bool = False
    noise_head: bool = False
    noise_std_range: tuple[float, float] = (0.08, 0.16)

    def __post_init__(self):
        shared = ("depth", "num_heads", "num_kv_heads", "head_dim")
        for name in shared:
            if getattr(self.vlm, name) != getattr(self.expert, name):
                raise ValueError(
                    f"vlm.{name}={getattr(self.vlm, name)} != expert.{name}={getattr(self.expert, name)}: "
                    f"the two experts share one attention per layer, so {shared} must match"
                )
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "noise_std_range", tuple(self.noise_std_range))

    @classmethod
    def pi0(cls, **overrides) -> "Pi0Config":
        """The published pi0: So400m/14 + Gemma 2B + Gemma 300M expert, 3.24B parameters."""
        return replace(cls(), **overrides)

    @classmethod
    def nano(cls, **overrides) -> "Pi0Config":
        """Same architecture at CPU size: 64-px images, patch 8, 2.2M parameters, vocab of the shipped tokenizer."""
        config = cls(
            vision=SiglipConfig(width=128, depth=4, mlp_dim=512, num_heads=4, patch_size=8, image_size=64),
            vlm=GemmaConfig(width=128, depth=4, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=32),
            expert=GemmaConfig(width=64, depth=4, mlp_dim=256, num_heads=4, num_kv_heads=1, head_dim=32),
            vocab_size=1024,
            action_dim=32,
            action_horizon=50,
            max_token_len=48,
        )
        return replace(config, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Pi0Config":
        data = dict(data)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown Pi0Config fields {sorted(unknown)}")
        data["vision"] = SiglipConfig(**data.get("vision", {}))
        data["vlm"] = GemmaConfig(**data.get("vlm", {}))
        data["expert"] = GemmaConfig(**data.get("expert", GemmaConfig.gemma_300m().__dict__))
        return cls(**data)
