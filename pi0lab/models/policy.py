"""The bridge between environments / the RL trainer and the pi0 model.

Env observation (DESIGN.md section 6): main_images / wrist_images uint8 [N,H,W,3], states float32 [N,8],
task_descriptions (N strings). `Pi0Policy.preprocess` turns it into an `Observation`:

- images resized with padding to the model's size (aspect kept, pad black), scaled to [-1,1];
  cameras in the model's order: main -> 1st, wrist -> 2nd, any further camera (the right wrist) is
  a black image with mask False (what LIBERO checkpoints were trained with);
- instruction tokenized with the PaliGemma prompt format; state z-scored and zero-padded.

Model output (normalised [N,H,A]) -> unnormalised actions cut to the executed chunk [N,C,E]
(C = action_chunk, E = action_env_dim).

Two trainer calls:
- `rollout(obs)`: sample a denoising chain with the chosen noise method (pi0lab.flow), return actions,
  the chain, its noisy-step indices, log-probs (executed chunk, real action dims, summed over noisy
  steps) and values.
- `evaluate(obs, chain, noisy_steps, prefix=None)`: the same log-probs, values and entropy recomputed
  under the current weights, with gradients. With unchanged weights they equal the rollout's. With the
  prefix frozen (`train_expert_only`) the rollout also returns its prefix KV cache, and `evaluate` takes
  it back: an update then runs only the expert, never SigLIP and the VLM again.

The value is V(mean of action-token features at the chain's first step, x = stored noise, t = 1),
so rollout and training compute the very same quantity.
"""

import torch
from torch import Tensor, nn

from pi0lab.choices import INITIAL_NOISES, LOGPROB_REDUCTIONS, PRECISIONS
from pi0lab.flow import METHODS, chunk_logprob, gaussian_entropy, recompute_logprobs, sample_chain
from pi0lab.models.checkpoint import load_pi0
from pi0lab.models.config import PALIGEMMA_VOCAB_SIZE
from pi0lab.models.normalize import NormStats, normalize, unnormalize
from pi0lab.models.pi0 import Observation, Pi0, PrefixCache, resize_with_pad
from pi0lab.models.tokenizer import PaligemmaTokenizer


def to_model_images(images: Tensor, size: int) -> Tensor:
    """uint8 [N,H,W,3] -> float [N,3,size,size] in [-1,1] (x / 255 * 2 - 1, then resized with padding)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [N,H,W,3], got {images.dtype} {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
    return x if x.shape[-2:] == (size, size) else resize_with_pad(x, size)


class Pi0Policy(nn.Module):
    """pi0 + tokenizer + norm stats + the RL sampling recipe.

    noise_method: "flow_sde" (one noisy step per call), "cps", "reinflow" (learned std, every step; needs
    the model's noise head) or "ode". `train_expert_only` freezes SigLIP, projector, embedding and VLM.
    Whether the critic's gradient reaches the expert is the value head's own `detach` flag.
    precision "bf16" runs the model under bf16 autocast (CUDA only); "fp32" runs it in fp32 everywhere.
    initial_noise: where every sampling chain starts, "gaussian" (x_1 ~ N(0, I), pi0's sampler) or
    "zero" (x_1 = 0, the prior's mean). From a random x_1 the ODE policy is itself random and RL credits
    none of that randomness to the log-probs, which only cover the noisy steps; from x_1 = 0 the ODE is
    deterministic and a rollout's randomness is all in the noisy steps it credits.
    logprob_reduction: a sample's log-prob is the "sum" of the elementwise log-probs over the executed
    chunk, the real action dims and the noisy steps (the recipe), or their "mean" (DPPO / ReinFlow), whose
    ratio moves D = chunk * dims * steps times slower and so fits a clip range of that smaller scale.
    noise_std_min floors the std of every noisy transition; noise_steps says which denoise steps are
    noisy: "one" drawn per call, "all", "first" (only t = 1 -> 1 - 1/N: from x_1 = 0 the credited noise
    then decides where the whole chain goes, as the initial noise would), or None (the method's default).
    """

    def __init__(self, model: Pi0, norm_stats: dict[str, NormStats], tokenizer: PaligemmaTokenizer | None = None,
                 action_chunk: int = 5, action_env_dim: int = 7, num_steps: int = 4, noise_method: str = "flow_sde",
                 noise_level: float = 0.5, train_expert_only: bool = False, precision: str = "fp32",
                 initial_noise: str = "gaussian", logprob_reduction: str = "sum", noise_std_min: float = 0.0,
                 noise_steps: str | None = None):
        super().__init__()
        config = model.config
        tokenizer = tokenizer or PaligemmaTokenizer(model.tokenizer_path, max_len=config.max_token_len)
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but the model's vocab is {config.vocab_size}")
        if tokenizer.is_shipped and config.vocab_size == PALIGEMMA_VOCAB_SIZE:
            raise ValueError("this model uses PaliGemma's vocabulary: pass tokenizer=PaligemmaTokenizer("
                             "'/path/to/paligemma_tokenizer.model'); the shipped tokenizer's ids mean other words")
        missing = {"state", "actions"} - set(norm_stats)
        if missing:
            raise ValueError(f"norm_stats lacks {sorted(missing)}; compute them with compute_norm_stats")
        if noise_method not in METHODS:
            raise ValueError(f"unknown noise_method {noise_method!r}; expected one of {METHODS}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
        if initial_noise not in INITIAL_NOISES:
            raise ValueError(f"unknown initial_noise {initial_noise!r}; expected one of {INITIAL_NOISES}")
        if logprob_reduction not in LOGPROB_REDUCTIONS:
            raise ValueError(f"unknown logprob_reduction {logprob_reduction!r}; expected one of {LOGPROB_REDUCTIONS}")
        if noise_std_min < 0:
            raise ValueError(f"noise_std_min must be >= 0, got {noise_std_min}")
        if noise_steps not in (None, "one", "all", "first"):
            raise ValueError(f"noise_steps must be 'one', 'all', 'first' or None (the method's default), got {noise_steps!r}")
        if noise_method == "reinflow" and not config.noise_head:
            raise ValueError("noise_method 'reinflow' needs a model built with Pi0Config(noise_head=True)")
        if not 1 <= action_chunk <= config.action_horizon:
            raise ValueError(f"action_chunk must be in [1, {config.action_horizon}], got {action_chunk}")
        if max(norm_stats["state"].dim, norm_stats["actions"].dim) > config.action_dim:
            raise ValueError(f"norm stats are wider than the model's action_dim {config.action_dim}")
        if norm_stats["actions"].dim < action_env_dim:
            raise ValueError(f"action stats cover {norm_stats['actions'].dim} dims < action_env_dim {action_env_dim}")
        self.model, self.tokenizer, self.norm_stats = model, tokenizer, norm_stats
        self.action_chunk, self.action_env_dim, self.num_steps = action_chunk, action_env_dim, num_steps
        self.noise_method, self.noise_level = noise_method, noise_level
        self.train_expert_only, self.precision, self.initial_noise = train_expert_only, precision, initial_noise
        self.logprob_reduction, self.noise_std_min, self.noise_steps = logprob_reduction, noise_std_min, noise_steps
        if train_expert_only:
            for part in (model.vision, model.projector, model.embed_tokens, model.vlm):
                part.requires_grad_(False)

    @classmethod
    def from_checkpoint(cls, path, tokenizer: PaligemmaTokenizer | None = None, **kwargs) -> "Pi0Policy":
        """Load weights + norm stats (+ tokenizer reference) from any checkpoint `load_pi0` reads."""
        model = load_pi0(path)
        if model.norm_stats is None:
            raise ValueError(f"{path} carries no norm stats; build Pi0Policy(model, norm_stats=...) yourself")
        return cls(model, model.norm_stats, tokenizer, **kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.action_out_proj.weight.device

    def autocast(self):
        """The context the model runs in: bf16 autocast (fp32 weights) for precision "bf16", else plain fp32."""
        if self.precision == "bf16" and self.device.type != "cuda":
            raise ValueError(f"precision 'bf16' needs the policy on a CUDA device, not {self.device}; use 'fp32' on CPU")
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.precision == "bf16")

    # ----------------------------------------------------------------------------- env <-> model

    def preprocess(self, env_obs: dict) -> Observation:
        """Env observation dict -> model `Observation` on the policy's device."""
        config, device = self.model.config, self.device
        main = torch.as_tensor(env_obs["main_images"])
        n = main.shape[0]
        sources = [main, torch.as_tensor(env_obs["wrist_images"])]
        images, masks = {}, {}
        for index, camera in enumerate(config.cameras):
            if index < len(sources):
                images[camera] = to_model_images(sources[index], config.vision.image_size).to(device)
                masks[camera] = torch.ones(n, dtype=torch.bool, device=device)
            else:  # a camera the env does not have: black image, masked out
                images[camera] = torch.full((n, 3, config.vision.image_size, config.vision.image_size), -1.0,
                                            device=device)
                masks[camera] = torch.zeros(n, dtype=torch.bool, device=device)
        tokens, token_mask = self.tokenizer.tokenize(list(env_obs["task_descriptions"]))
        return Observation(images=images, image_masks=masks, state=self.preprocess_state(env_obs["states"]),
                           tokens=tokens.to(device), token_mask=token_mask.to(device))

    def preprocess_state(self, states) -> Tensor:
        """Env robot states [N,S] -> z-scored, zero-padded model state [N,A] on the policy's device."""
        state = torch.as_tensor(states, dtype=torch.float32)
        if state.shape[-1] != self.norm_stats["state"].dim:  # e.g. the tabletop's privileged-state control
            raise ValueError(
                f"the env's states are {state.shape[-1]} wide but this policy's state norm stats are "
                f"{self.norm_stats['state'].dim} wide (a checkpoint trained with the privileged-state control has "
                "8 + the things' poses; without it, 8): set env.train.privileged_state and env.eval.privileged_state "
                "(pi0lab eval: --privileged-state) to match the checkpoint")
        state = normalize(state, self.norm_stats["state"], pad_to=self.model.config.action_dim)
        return state.to(self.device)

    def postprocess(self, actions: Tensor) -> Tensor:
        """Normalised model actions [N,H,A] -> env actions [N,C,E] (unnormalised, executed chunk, real dims)."""
        env_actions = unnormalize(actions.float(), self.norm_stats["actions"])
        return env_actions[:, : self.action_chunk, : self.action_env_dim]

    # ----------------------------------------------------------------------------- flow pieces

    def _prefix(self, obs: Observation) -> PrefixCache:
        with self.autocast(), torch.set_grad_enabled(torch.is_grad_enabled() and not self.train_expert_only):
            return self.model.prefill(obs)

    def _velocity_fn(self, cache: PrefixCache, state: Tensor):
        def velocity(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            with self.autocast():
                v, features = self.model.denoise_step(cache, state, x, t)
            return v.float(), features.float()

        return velocity

    def _std_fn(self):
        if self.noise_method != "reinflow":
            return None
        return lambda features, t: self.model.noise_head(features)

    def _value(self, features: Tensor) -> Tensor | None:
        return self.model.value_head(features) if self.model.config.value_head else None

    def _chunk_logprob(self, per_step: Tensor) -> Tensor:
        """[N,K,H,A] elementwise log-probs of the noisy steps -> [N] over the executed chunk, real dims and K:
        their sum, or with logprob_reduction "mean" that sum / (K * chunk * dims)."""
        total = chunk_logprob(per_step, self.action_chunk, self.action_env_dim).sum(dim=1)
        if self.logprob_reduction == "sum":
            return total
        return total / (per_step.shape[1] * self.action_chunk * self.action_env_dim)

    # ----------------------------------------------------------------------------- trainer calls

    @torch.no_grad()
    def prefill(self, env_obs: dict) -> PrefixCache:
        """The prefix cache of env observations, with its pooled `features` [N,W] (see `PrefixCache`);
        `rollout(env_obs, prefix=...)` reuses it."""
        return self._prefix(self.preprocess(env_obs))

    @torch.no_grad()
    def rollout(self, env_obs: dict, deterministic: bool = False, generator: torch.Generator | None = None,
                noise: Tensor | None = None, prefix: PrefixCache | None = None) -> dict:
        """Sample actions for a batch of env observations.

        Returns actions [N,C,E] (env units), chain [N,S+1,H,A], noisy_steps [N,K] long,
        logprobs [N] (0 when deterministic), values [N] (None without a value head), and prefix: the
        prefix KV cache when it is frozen (`train_expert_only`, for `evaluate`), else None.
        deterministic=True runs the plain ODE (evaluation).
        noise: the chains' start x_1 [N,H,A] (None: drawn as `initial_noise` says); with deterministic=True
        the actions are a function of the observation and this noise (what DSRL's noise policy steers).
        prefix: these observations' cache from `prefill(env_obs)`; then `env_obs` needs only `states`.
        """
        if prefix is None:
            obs = self.preprocess(env_obs)
            cache, state = self._prefix(obs), obs.state
        else:
            cache, state = prefix, self.preprocess_state(env_obs["states"])
        config = self.model.config
        shape = (state.shape[0], config.action_horizon, config.action_dim)
        if noise is not None:
            if tuple(noise.shape) != shape:
                raise ValueError(f"noise must be x_1 {list(shape)} [N,H,A], got {list(noise.shape)}")
            noise = noise.to(self.device, torch.float32)
        elif self.initial_noise == "zero":
            noise = torch.zeros(shape, device=self.device)  # x_1 = 0
        else:
            noise = torch.randn(shape, generator=generator, device=self.device)  # x_1 ~ N(0, I)
        first_features = []

        velocity_fn = self._velocity_fn(cache, state)

        def recording_velocity(x: Tensor, t: Tensor):
            v, features = velocity_fn(x, t)
            if not first_features:
                first_features.append(features)  # step 0: x = noise, t = 1 (the value's input)
            return v, features

        method = "ode" if deterministic else self.noise_method
        chain = sample_chain(recording_velocity, noise, self.num_steps, method=method, noise_level=self.noise_level,
                             noise_steps=None if deterministic else [0] if self.noise_steps == "first" else self.noise_steps,
                             std_fn=self._std_fn() if method == "reinflow" else None, generator=generator,
                             std_min=self.noise_std_min)
        return {
            "actions": self.postprocess(chain.actions),
            "chain": chain.chain,
            "noisy_steps": chain.noisy_steps,
            "logprobs": self._chunk_logprob(chain.noisy_logprobs),
            "values": self._value(first_features[0]),
            "prefix": cache if self.train_expert_only else None,
        }

    def evaluate(self, env_obs: dict, chain: Tensor, noisy_steps: Tensor, prefix: PrefixCache | None = None) -> dict:
        """Log-probs [N], values [N] (or None) and entropy [N] of stored chains under the current weights.

        Entropy is the mean Gaussian entropy of the noisy transitions over the executed chunk and real dims.
        Runs with gradients (the PPO update). `prefix`: the rollout's prefix KV cache of these observations
        (only valid while the prefix is frozen); then `env_obs` needs only `states`.
        """
        if prefix is None:
            obs = self.preprocess(env_obs)
            cache, state = self._prefix(obs), obs.state
        elif not self.train_expert_only:
            raise ValueError("a stored prefix cache is only valid while the prefix is frozen (train_expert_only=True)")
        else:
            cache, state = prefix, self.preprocess_state(env_obs["states"])
        velocity_fn = self._velocity_fn(cache, state)
        transitions = recompute_logprobs(velocity_fn, chain, noisy_steps, self.noise_method,
                                         noise_level=self.noise_level, std_fn=self._std_fn(),
                                         std_min=self.noise_std_min)
        entropy = gaussian_entropy(transitions.stds)[:, :, : self.action_chunk, : self.action_env_dim]
        values = None
        if self.model.config.value_head:
            t_start = torch.ones(chain.shape[0], device=chain.device)
            _, features = velocity_fn(chain[:, 0], t_start)
            values = self._value(features)
        return {
            "logprobs": self._chunk_logprob(transitions.logprobs),
            "values": values,
            "entropy": entropy.mean(dim=(1, 2, 3)),
        }
