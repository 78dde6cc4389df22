"""DSRL's SAC update speed: milliseconds per SAC step (`sac_updates` / `updates`) at the tabletop recipe's sizes.

At `algorithm.sac.updates_per_iteration=200` the SAC updates are ~87% of a DSRL iteration on one
thread, so their cost decides how much DSRL fits in a CPU budget. Each row builds the agent of
`tabletop_dsrl_nano` (features 128 wide: the nano's VLM width; the robot's 8 state dims; the 35-dim
noise block) with the row's overrides of `algorithm.sac`, fills a replay buffer with random
transitions, and times `--updates` updates (the median of `--repeats` runs of them, after a warm-up).

    OMP_NUM_THREADS=1 python benchmarks/sac_update.py
    OMP_NUM_THREADS=1 python benchmarks/sac_update.py --variants shipped heads2 batch128
    OMP_NUM_THREADS=1 python benchmarks/sac_update.py --variants batch64 --profile   # + where a round's CPU time goes
"""

import argparse
import statistics
import time

import torch

from pi0lab.envs.base import STATE_DIM
from pi0lab.models.config import Pi0Config
from pi0lab.train.config import load_config
from pi0lab.train.dsrl import ReplayBuffer, SacAgent, sac_updates

VARIANTS = {
    "shipped": [],
    "heads2": ["algorithm.sac.num_q_heads=2"],
    "heads5": ["algorithm.sac.num_q_heads=5"],
    "batch128": ["algorithm.sac.batch_size=128"],
    "batch64": ["algorithm.sac.batch_size=64"],
    "batch128_hidden2": ["algorithm.sac.batch_size=128", "algorithm.sac.hidden_dims=[128,128]"],
    "batch128_width64": ["algorithm.sac.batch_size=128", "algorithm.sac.hidden_dims=[64,64,64]"],
    "batch64_heads2_ln": ["algorithm.sac.batch_size=64", "algorithm.sac.num_q_heads=2",
                          "algorithm.sac.critic_layer_norm=true"],
    "batch64_heads5_ln": ["algorithm.sac.batch_size=64", "algorithm.sac.num_q_heads=5",
                          "algorithm.sac.critic_layer_norm=true"],
    "batch64_ratio2": ["algorithm.sac.batch_size=64", "algorithm.sac.critic_actor_ratio=2"],
}
NOISE_SIZE = 35  # x_1[:5, :7]: the executed steps' real dims


def random_transitions(count: int, feature_dim: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`count` transitions with the replay buffer's fields, of the shapes DSRL stores."""
    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    return {"features": randn(count, feature_dim), "states": randn(count, STATE_DIM),
            "actions": torch.rand(count, NOISE_SIZE, generator=generator) * 2 - 1, "rewards": randn(count),
            "dones": torch.rand(count, generator=generator) < 0.1, "next_features": randn(count, feature_dim),
            "next_states": randn(count, STATE_DIM)}


def time_updates(overrides: list[str], updates: int, repeats: int, profile: bool = False) -> float:
    """Median milliseconds of one SAC step (a round of `updates` steps / updates) of the agent `overrides` configure;
    with `profile`, also print torch.profiler's table of one more round (ops by their own CPU time)."""
    cfg = load_config("tabletop_dsrl_nano", [*overrides, f"algorithm.sac.updates_per_iteration={updates}"])
    sac, feature_dim = cfg.algorithm.sac, Pi0Config.nano().vlm.width
    torch.manual_seed(0)
    agent = SacAgent(feature_dim, STATE_DIM, NOISE_SIZE, sac, cfg.algorithm.gamma)
    generator = torch.Generator().manual_seed(0)
    buffer = ReplayBuffer(sac.replay_buffer_size)
    buffer.add(random_transitions(sac.replay_buffer_size, feature_dim, generator))

    def run() -> float:
        start = time.perf_counter()
        sac_updates(agent, buffer, sac, generator)
        return (time.perf_counter() - start) / updates * 1e3

    run()  # warm-up
    median = statistics.median(run() for _ in range(repeats))
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            run()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--updates", type=int, default=100, help="updates per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print where each variant's CPU time goes")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| variant | overrides | ms / update |\n|---|---|---|")
    for name in args.variants:
        ms = time_updates(VARIANTS[name], args.updates, args.repeats, args.profile)
        print(f"| {name} | {' '.join(VARIANTS[name]) or '-'} | {ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
