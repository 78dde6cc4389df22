"""Load and save pi0 weights: openpi PyTorch, lerobot (>= 0.4 and <= 0.3), RLinf, and pi0lab's own format.

Every layout is renamed to this package's parameter names, then loaded strictly: a missing key,
an unexpected key or a shape mismatch raises `CheckpointError` listing all of them. Two source keys
are dropped on purpose because pi0 never uses them: the action expert's `lm_head` (the expert has no
token output) and a SigLIP pooling `head` (pi0 uses every patch token). PaliGemma's `lm_head` is
the token embedding (tied weights), so it becomes `embed_tokens`.

pi0lab directory (`save_pi0`): `model.safetensors` (our names) + `pi0lab.json` (config, tokenizer
reference) + `norm_stats.json` (openpi format) when the model carries stats.
"""

import json
import math
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pi0lab.models.config import GemmaConfig, Pi0Config, SiglipConfig
from pi0lab.models.normalize import NormStats, load_norm_stats, save_norm_stats
from pi0lab.models.pi0 import Pi0


class CheckpointError(ValueError):
    """A checkpoint does not match the model (names or shapes) or cannot be read."""


WRAPPER_SEGMENTS = {"_fsdp_wrapped_module", "_orig_mod", "module"}  # FSDP / torch.compile / DDP wrappers

# (source prefix, pi0lab prefix or None to drop); first match wins.
_EXPERT = [
    ("paligemma_with_expert.gemma_expert.model.", "expert."),
    ("paligemma_with_expert.gemma_expert.lm_head.", None),
]
OPENPI_RENAMES = [
    ("paligemma_with_expert.paligemma.model.vision_tower.vision_model.head.", None),
    ("paligemma_with_expert.paligemma.model.vision_tower.vision_model.", "vision."),
    ("paligemma_with_expert.paligemma.model.multi_modal_projector.linear.", "projector."),
    ("paligemma_with_expert.paligemma.model.language_model.embed_tokens.", "embed_tokens."),
    ("paligemma_with_expert.paligemma.model.language_model.", "vlm."),
    ("paligemma_with_expert.paligemma.lm_head.", "embed_tokens."),
    *_EXPERT,
]
LEROBOT_V03_RENAMES = [
    ("paligemma_with_expert.paligemma.vision_tower.vision_model.head.", None),
    ("paligemma_with_expert.paligemma.vision_tower.vision_model.", "vision."),
    ("paligemma_with_expert.paligemma.multi_modal_projector.linear.", "projector."),
    ("paligemma_with_expert.paligemma.language_model.model.embed_tokens.", "embed_tokens."),
    ("paligemma_with_expert.paligemma.language_model.model.", "vlm."),
    ("paligemma_with_expert.paligemma.language_model.lm_head.", "embed_tokens."),
    *_EXPERT,
]
# RLinf's ReinFlow noise head: mlp_logvar.moduleList.i.linear_1 -> our nn.Sequential index 2i.
_RLINF_NOISE = re.compile(r"^noise_head\.mlp_logvar\.moduleList\.(\d+)\.linear_1\.(weight|bias)$")
# lerobot <= 0.3 keeps its normalisation buffers in the weights file.
_LEROBOT_NORM = re.compile(r"^(normalize_inputs|normalize_targets|unnormalize_outputs)\.buffer_(\w+)\.(mean|std|min|max)$")


def strip_wrappers(key: str) -> str:
    """'_fsdp_wrapped_module.module._orig_mod.state_proj.weight' -> 'state_proj.weight'."""
    return ".".join(part for part in key.split(".") if part not in WRAPPER_SEGMENTS)


def detect_layout(keys) -> str:
    """Name the key layout of a (wrapper-stripped) state dict: openpi, rlinf, lerobot_v04, lerobot_v03, pi0lab."""
    keys = list(keys)
    if any(k.startswith("model.paligemma_with_expert.paligemma.model.") for k in keys):
        return "lerobot_v04"
    if any(k.startswith("model.paligemma_with_expert.paligemma.language_model.model.") for k in keys):
        return "lerobot_v03"
    if any(k.startswith("paligemma_with_expert.") for k in keys):
        return "rlinf" if any(k.startswith(("value_head.", "noise_head.")) for k in keys) else "openpi"
    if any(k.startswith("vlm.layers.") for k in keys):
        return "pi0lab"
    sample = ", ".join(keys[:5])
    raise CheckpointError(f"unrecognised checkpoint key layout (first keys: {sample}); expected openpi, lerobot, "
                          "RLinf or pi0lab names (see DESIGN.md section 4)")


def _rename(key: str, renames) -> str | None:
    for source, target in renames:
        if key.startswith(source):
            return None if target is None else target + key[len(source):]
    return key


def to_pi0lab_names(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str, dict]:
    """Rename any supported layout to pi0lab names.

    Returns (state dict, layout name, extras) where extras holds norm-stat tensors found in the file
    (lerobot <= 0.3) under {"state": {...}, "actions": {...}}.
    """
    stripped = {strip_wrappers(k): v for k, v in state_dict.items()}
    layout = detect_layout(stripped)
    renames = {"openpi": OPENPI_RENAMES, "rlinf": OPENPI_RENAMES, "lerobot_v04": OPENPI_RENAMES,
               "lerobot_v03": LEROBOT_V03_RENAMES, "pi0lab": []}[layout]
    out, extras = {}, {}
    for key, value in stripped.items():
        if layout.startswith("lerobot"):
            norm = _LEROBOT_NORM.match(key)
            if norm:
                if norm.group(1) != "unnormalize_outputs":
                    name = "state" if "state" in norm.group(2) else "actions"
                    extras.setdefault(name, {})[norm.group(3)] = value
                continue
            key = key.removeprefix("model.")
        noise = _RLINF_NOISE.match(key)
        if noise:
            key = f"noise_head.mlp.{2 * int(noise.group(1))}.{noise.group(2)}"
        if key in ("noise_head.logvar_min", "noise_head.logvar_max"):
            extras[key] = value
            continue
        new_key = _rename(key, renames)
        if new_key is None:
            continue
        if new_key in out and not torch.equal(out[new_key], value):
            raise CheckpointError(f"two source keys map to {new_key} with different values (untied embedding?)")
        out[new_key] = value
    return out, layout, extras


# ----------------------------------------------------------------------------- reading files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file or directory.

    A directory is read as model.safetensors if present, else all its *.safetensors (shards), else
    full_weights.pt (RLinf).
    """
    path = Path(path)
    if path.is_dir():
        candidates = [path / "model.safetensors"] if (path / "model.safetensors").exists() else sorted(
            p for p in path.glob("*.safetensors") if "processor" not in p.name)  # not lerobot's normaliser files
        if not candidates and (path / "full_weights.pt").exists():
            candidates = [path / "full_weights.pt"]
        if not candidates:
            raise CheckpointError(f"no weights in {path}: expected model.safetensors, *.safetensors or full_weights.pt")
        files = candidates
    elif path.exists():
        files = [path]
    else:
        raise CheckpointError(f"checkpoint {path} does not exist")
    state_dict = {}
    for file in files:
        if file.suffix == ".safetensors":
            state_dict.update(load_file(file))
        elif file.suffix in (".pt", ".pth", ".bin"):
            loaded = torch.load(file, map_location="cpu", weights_only=True)
            for wrapper in ("model", "state_dict", "module"):
                if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
                    loaded = loaded[wrapper]
            if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
                raise CheckpointError(f"{file} does not hold a flat dict of tensors")
            state_dict.update(loaded)
        else:
            raise CheckpointError(f"unsupported weights file {file} (use .safetensors or .pt)")
    return state_dict


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _count(keys, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({regex.match(k).group(1) for k in keys if regex.match(k)})


def infer_config(state_dict: dict[str, torch.Tensor], hints: dict | None = None) -> Pi0Config:
    """Sizes from tensor shapes (pi0lab names); what shapes cannot tell comes from `hints` or pi0 defaults.

    Hints (from a checkpoint's config.json): action_horizon / chunk_size, max_token_len / tokenizer_max_length,
    vision_num_heads, num_heads. Defaults: SigLIP 16 heads, Gemma 8 query heads (openpi's values).
    """
    hints = hints or {}
    try:
        patch = state_dict["vision.embeddings.patch_embedding.weight"]  # [W,3,p,p]
        num_positions = state_dict["vision.embeddings.position_embedding.weight"].shape[0]
        vision_width, patch_size = patch.shape[0], patch.shape[-1]
        grid = math.isqrt(num_positions)
        vision = SiglipConfig(
            width=vision_width,
            depth=_count(state_dict, r"^vision\.encoder\.layers\.(\d+)\."),
            mlp_dim=state_dict["vision.encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_heads=hints.get("vision_num_heads", 16),
            patch_size=patch_size,
            image_size=grid * patch_size,
        )

        def gemma(prefix: str) -> GemmaConfig:
            q = state_dict[f"{prefix}.layers.0.self_attn.q_proj.weight"]
            k = state_dict[f"{prefix}.layers.0.self_attn.k_proj.weight"]
            num_heads = hints.get("num_heads", 8)
            head_dim = q.shape[0] // num_heads
            return GemmaConfig(width=q.shape[1], depth=_count(state_dict, rf"^{prefix}\.layers\.(\d+)\."),
                               mlp_dim=state_dict[f"{prefix}.layers.0.mlp.gate_proj.weight"].shape[0],
                               num_heads=num_heads, num_kv_heads=k.shape[0] // head_dim, head_dim=head_dim)

        return Pi0Config(
            vision=vision,
            vlm=gemma("vlm"),
            expert=gemma("expert"),
            vocab_size=state_dict["embed_tokens.weight"].shape[0],
            action_dim=state_dict["action_in_proj.weight"].shape[1],
            action_horizon=hints.get("action_horizon", hints.get("chunk_size", 50)),
            max_token_len=hints.get("max_token_len", hints.get("tokenizer_max_length", 48)),
            value_head=any(k.startswith("value_head.") for k in state_dict),
            noise_head=any(k.startswith("noise_head.") for k in state_dict),
        )
    except KeyError as missing:
        raise CheckpointError(f"cannot infer the model size: checkpoint lacks {missing}; pass config=Pi0Config(...)") from None


def load_weights(model: Pi0, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Copy pi0lab-named tensors into the model; strict: any missing/unexpected/mis-shaped key raises."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                        for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if mismatched or (strict and (missing or unexpected)):

        def listing(title, items):
            shown = "\n    ".join(items[:20]) + (f"\n    ... and {len(items) - 20} more" if len(items) > 20 else "")
            return f"\n  {title} ({len(items)}):\n    {shown}" if items else ""

        raise CheckpointError("checkpoint does not match the model:" + listing("missing", missing)
                              + listing("unexpected", unexpected) + listing("shape mismatch", mismatched))
    with torch.no_grad():
        for key, value in state_dict.items():
            if key in own:
                own[key].copy_(value)


def _find_norm_stats(path: Path, asset_id: str | None) -> dict[str, NormStats] | None:
    if (path / "norm_stats.json").exists():
        return load_norm_stats(path / "norm_stats.json")
    # openpi asset ids may contain a slash ("physical-intelligence/libero")
    assets = sorted((path / "assets").rglob("norm_stats.json")) if (path / "assets").is_dir() else []
    names = [p.parent.relative_to(path / "assets").as_posix() for p in assets]
    if asset_id is not None:
        assets = [p for p, name in zip(assets, names) if name == asset_id]
        if not assets:
            raise CheckpointError(f"no assets/{asset_id}/norm_stats.json in {path} (found {names})")
    if len(assets) > 1:
        raise CheckpointError(f"several norm stats in {path}/assets ({names}): pass asset_id")
    if assets:
        return load_norm_stats(assets[0])
    processors = sorted(path.glob("*normalizer_processor*.safetensors"))
    if processors:  # lerobot >= 0.4 keeps stats in its pre/post-processor files
        tensors = load_file(processors[0])
        stats = {}
        for name, prefix in (("state", "observation.state."), ("actions", "action.")):
            if f"{prefix}mean" in tensors:
                stats[name] = NormStats(**{f: tensors[prefix + f].numpy() for f in ("mean", "std", "q01", "q99")
                                          if prefix + f in tensors})
        return stats or None
    return None


def load_pi0(path: str | Path, config: Pi0Config | None = None, strict: bool = True,
             asset_id: str | None = None) -> Pi0:
    """Build a `Pi0` from an openpi / lerobot / RLinf / pi0lab checkpoint (file or directory).

    config=None infers sizes from the weights (and config.json hints). Norm stats found next to the
    weights (norm_stats.json, assets/<asset_id>/norm_stats.json, lerobot buffers or processor files)
    are attached as `model.norm_stats`; a pi0lab checkpoint's tokenizer reference as `model.tokenizer_path`.
    """
    path = Path(path)
    directory = path if path.is_dir() else path.parent
    state_dict, layout, extras = to_pi0lab_names(read_state_dict(path))
    meta = _read_json(directory / "pi0lab.json")
    if config is None:
        if layout == "pi0lab" and "config" in meta:
            config = Pi0Config.from_dict(meta["config"])
        else:
            config = infer_config(state_dict, _read_json(directory / "config.json"))
    if config.noise_head and "noise_head.logvar_min" in extras:
        stored = tuple(float(torch.exp(0.5 * extras[k]).reshape(-1)[0]) for k in ("noise_head.logvar_min",
                                                                                 "noise_head.logvar_max"))
        if not all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(stored, config.noise_std_range)):
            raise CheckpointError(f"noise head std range in checkpoint {stored} != config {config.noise_std_range}")
    model = Pi0(config)
    load_weights(model, state_dict, strict=strict)
    model.norm_stats = _find_norm_stats(directory, asset_id)
    if model.norm_stats is None and extras.get("state") and extras.get("actions"):
        model.norm_stats = {name: NormStats(**{f: v.numpy() for f, v in extras[name].items() if f in ("mean", "std")})
                            for name in ("state", "actions")}
    model.tokenizer_path = meta.get("tokenizer")
    return model


def save_pi0(model: Pi0, path: str | Path, tokenizer_path: str | None = None) -> Path:
    """Write a pi0lab checkpoint directory: model.safetensors, pi0lab.json, norm_stats.json (if any).

    `tokenizer_path` records which SentencePiece model the prompts were tokenized with
    (None = the tokenizer shipped with pi0lab).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, path / "model.safetensors")
    meta = {"format": "pi0lab", "version": 1, "config": model.config.to_dict(), "tokenizer": tokenizer_path}
    (path / "pi0lab.json").write_text(json.dumps(meta, indent=2))
    if model.norm_stats:
        save_norm_stats(path / "norm_stats.json", model.norm_stats)
    return path
