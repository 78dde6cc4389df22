"""LIBERO speed on this machine, one world in this process: steps/s with and without cameras, reset time.

    .venv/bin/python benchmarks/libero_speed.py [--suite libero_spatial] [--image-size 224] [--steps 60]

"with cameras" renders both cameras after every step (chunk of 1); "chunk of C" renders once per
C steps (what pi0lab does); "without cameras" steps the simulator alone. Resets include the 10
settle steps and one render; "hard" rebuilds the MuJoCo model (the default, as openpi / RLinf),
"soft" only resets the simulator state. The first reset of a task also builds its world.

Each line gives wall-clock and CPU-time figures: on a shared machine the CPU time (this process,
all its threads) is what the work costs, the wall clock what it took next to everything else.
"""

import argparse
import time

import numpy as np

from pi0lab.envs.libero import NUM_SETTLE_STEPS, SETTLE_ACTION, LiberoEnv


def seconds(fn, repeats: int = 1) -> np.ndarray:
    """Mean (wall-clock, CPU) seconds of fn() over `repeats` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return np.array([time.perf_counter() - wall, time.process_time() - cpu]) / repeats


def steps_per_second(env: LiberoEnv, chunk: int, steps: int) -> np.ndarray:
    """(wall, CPU) policy steps per second through step_chunk (one render per chunk), fresh episode."""
    env.reset(0, 0)
    hold = np.tile(SETTLE_ACTION, (chunk, 1))
    return chunk / seconds(lambda: env.step_chunk(hold), steps // chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="libero_spatial")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=60, help="policy steps per measurement")
    args = parser.parse_args()

    rows = []
    for hard_reset in (True, False):
        # the step limit is never reached: every measurement runs fewer steps than this
        env = LiberoEnv(args.suite, image_size=args.image_size, seed=0, max_episode_steps=10 * args.steps, hard_reset=hard_reset)
        kind = "hard" if hard_reset else "soft"
        rows.append((f"first reset ({kind}: builds the world)", seconds(lambda: env.reset(0, 0)), "s"))
        rows.append((f"reset ({kind})", seconds(lambda: env.reset(0, 1), repeats=3), "s"))
        if hard_reset:
            env.close()
            continue
        rows.append(("steps/s with cameras (render every step)", steps_per_second(env, 1, args.steps), "steps/s"))
        for chunk in (5, 10):
            rows.append((f"steps/s, chunk of {chunk} (render once per chunk)", steps_per_second(env, chunk, args.steps), "steps/s"))
        env.reset(0, 0)
        rate = args.steps / seconds(lambda: [env.world.step(SETTLE_ACTION) for _ in range(args.steps)])
        rows.append(("steps/s without cameras (simulator only)", rate, "steps/s"))
        rows.append(("render both cameras", seconds(env._observe, repeats=5), "s"))
        env.close()

    print(f"LIBERO {args.suite}, {args.image_size}x{args.image_size} cameras, one process, "
          f"settle steps per reset: {NUM_SETTLE_STEPS}")
    print(f"  {'':<52s} {'wall':>8s} {'CPU':>8s}")
    for name, (wall, cpu), unit in rows:
        print(f"  {name:<52s} {wall:8.3f} {cpu:8.3f} {unit}")


if __name__ == "__main__":
    main()
