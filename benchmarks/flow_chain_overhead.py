"""Cost of the pi0lab.flow chain helpers on pi0 action shapes, beside a bare Euler loop.

    .venv/bin/python benchmarks/flow_chain_overhead.py [--batch 64] [--steps 4 10] [--repeats 50]

The velocity is one small linear map (a stand-in far cheaper than pi0's action expert), so the numbers
are the bookkeeping the helpers add per call: the noise-step draw, the Gaussian transition, the
log-probs and the stacked chain. "bare Euler" is x <- x - dt * v(x, t) with nothing stored.
"""

import argparse
import time

import torch

from pi0lab.flow import recompute_logprobs, sample_chain, time_grid

HORIZON, ACTION_DIM = 50, 32  # pi0 action chunk [H, A]


def milliseconds(fn, repeats: int) -> float:
    """Mean wall-clock milliseconds of fn() over `repeats` calls, after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return 1e3 * (time.perf_counter() - start) / repeats


def bare_euler(velocity, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    grid, x = time_grid(num_steps), noise
    for i in range(num_steps):
        x = x - (grid[i] - grid[i + 1]) * velocity(x, grid[i].expand(len(x)))
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 10])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    weight = torch.randn(ACTION_DIM, ACTION_DIM) / ACTION_DIM**0.5

    def velocity(x, t):
        return x @ weight + t[:, None, None]

    noise = torch.randn(args.batch, HORIZON, ACTION_DIM)
    gen = torch.Generator().manual_seed(0)
    print(f"batch {args.batch}, actions [{HORIZON},{ACTION_DIM}], torch threads {torch.get_num_threads()}")
    header = ["bare Euler", "ode chain", "sde one", "sde all", "recompute one", "recompute all"]
    print("steps " + " ".join(f"{name:>14}" for name in header) + "  (ms per call)")
    with torch.no_grad():
        for n in args.steps:
            one = sample_chain(velocity, noise, n, "flow_sde", 0.5, "one", generator=gen)
            every = sample_chain(velocity, noise, n, "flow_sde", 0.5, "all", generator=gen)
            calls = [
                lambda: bare_euler(velocity, noise, n),
                lambda: sample_chain(velocity, noise, n, "ode"),
                lambda: sample_chain(velocity, noise, n, "flow_sde", 0.5, "one", generator=gen),
                lambda: sample_chain(velocity, noise, n, "flow_sde", 0.5, "all", generator=gen),
                lambda: recompute_logprobs(velocity, one.chain, one.noisy_steps, "flow_sde", 0.5),
                lambda: recompute_logprobs(velocity, every.chain, every.noisy_steps, "flow_sde", 0.5),
            ]
            print(f"{n:>5} " + " ".join(f"{milliseconds(call, args.repeats):>14.2f}" for call in calls))


if __name__ == "__main__":
    main()
