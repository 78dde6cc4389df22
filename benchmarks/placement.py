"""Placed runs on CPU slots: iteration time and busy fractions per shape, pipelining, weight-sync time.

    python benchmarks/placement.py                       # every CPU section
    python benchmarks/placement.py --section gpu         # on a CUDA machine
    python benchmarks/placement.py --section pipeline --envs 16 --iterations 3

shapes    the seed's three placements (scaled to 4 / 2 / 3 CPU slots) and the single process, PPO on the
          tabletop with a freshly initialised nano (every episode runs to the step limit): mean iteration
          time after the first and each process's busy fraction (spans not ending in "wait" / wall time).
pipeline  `env: 0, rollout: 1, actor: 2` with rollout.pipeline_stage_num 1 and 2, the envs waiting
          `env.train.step_wait_s` per env and chunk (a sleep, as a GPU renderer would leave the CPU free),
          set so that a chunk's env time (the envs' own stepping + the wait) equals its inference: rollout throughput
          (env steps / window seconds) of each and their ratio.
sharding  the collocated shape (2 slots) with actor.data_parallel ddp and fsdp2: update and iteration time, and
          the bytes of training state per actor process (`training_state_bytes`) for the nano's and the real
          pi0's trainable weights, between updates and at an update's peak (activations not counted).
gpu       on a CUDA machine only: `env: 0, 'rollout,actor': 0` on one GPU (the env process beside the fused
          rollout + actor), the nano with actor.model.precision bf16 and fp32: iteration, rollout window and
          update time, and actor rank 0's peak GPU memory (`memory/gpu_peak_gb`).
sync      actor -> rollout weight broadcast (`World.broadcast_weights`, fp32 over gloo between two
          processes) for the nano's trainable weights, a mid size and the real pi0's expert + heads.

Every process runs one torch thread; the machine's cores are shared by all of them.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp

from pi0lab.models import Pi0, Pi0Config
from pi0lab.models.checkpoint import save_pi0
from pi0lab.models.normalize import NormStats
from pi0lab.runtime.spans import busy_fractions, read_spans
from pi0lab.train.config import load_config
from pi0lab.train.sft import fresh_model_config
from pi0lab.train.stages import make_trainer

SHAPES = {
    "single process": ["cluster.num_devices=1"],
    "shared + 2 stages (4 slots)": ["cluster.num_devices=4",
                                    "cluster.component_placement={env: 0-1, rollout: 2-3, actor: 0-3}",
                                    "rollout.pipeline_stage_num=2"],
    "collocated (2 slots)": ["cluster.num_devices=2", "cluster.component_placement={'env,rollout,actor': all}"],
    "disaggregated (3 slots)": ["cluster.num_devices=3", "cluster.component_placement={env: 0, rollout: 1, actor: 2}"],
}
PIPELINE = ["cluster.num_devices=3", "cluster.component_placement={env: 0, rollout: 1, actor: 2}"]


def nano_checkpoint(directory: Path) -> Path:
    torch.manual_seed(0)
    model = Pi0(fresh_model_config(load_config("tabletop_sft_nano")))
    model.norm_stats = {"state": NormStats(np.zeros(8), np.ones(8)), "actions": NormStats(np.zeros(7), np.ones(7))}
    return save_pi0(model, directory / "nano")


def run(checkpoint: Path, run_dir: Path, envs: int, iterations: int, overrides: list[str]) -> list[dict]:
    torch.set_num_threads(1)
    cfg = load_config("tabletop_ppo_nano", [
        f"actor.model.model_path={checkpoint}", f"runner.logger.log_path={run_dir}",
        "env.train.task_suite_name=tabletop_goal", f"env.train.total_num_envs={envs}",
        "env.train.video_cfg.save_video=false", f"runner.max_epochs={iterations}", "runner.val_check_interval=-1",
        "runner.save_interval=-1", "actor.global_batch_size=64", "actor.micro_batch_size=16",
        "algorithm.update_epoch=1", *overrides])
    trainer = make_trainer(cfg, progress=False)
    try:
        return [event.metrics for event in trainer.iterate()]
    finally:
        trainer.close()


def shapes(checkpoint: Path, tmp: Path, envs: int, iterations: int) -> None:
    print(f"\n## Shapes: PPO, {envs} tabletop envs, {iterations} iterations (mean over iterations 2..)\n")
    print("| placement | processes | iteration s | rollout window s | update s | busy fraction per process |")
    print("|---|---|---|---|---|---|")
    for i, (name, overrides) in enumerate(SHAPES.items()):
        run_dir = tmp / f"shape{i}"
        metrics = run(checkpoint, run_dir, envs, iterations, overrides + ["runner.save_interval=-1"])
        later = metrics[1:] or metrics
        rows = read_spans(run_dir)
        busy = busy_fractions(rows)
        print(f"| {name} | {max(len(busy), 1)} | {statistics.mean(m['time/iteration'] for m in later):.2f} "
              f"| {statistics.mean(m['time/window'] for m in later):.2f} "
              f"| {statistics.mean(m['time/update'] for m in later):.2f} "
              f"| {', '.join(f'{p}: {f:.2f}' for p, f in busy.items())} |", flush=True)


def pipeline(checkpoint: Path, tmp: Path, envs: int, iterations: int) -> None:
    probe = run(checkpoint, tmp / "probe", envs, 2, PIPELINE)[-1]
    chunk_steps = probe["env/episode_len"] / 5  # chunks per episode (5 actions per chunk)
    # the envs' own stepping plus the wait costs what inference costs: wait = (inference - env) per env and chunk
    wait = max(0.0, probe["time/rollout"] - probe["time/env"]) / chunk_steps / envs
    print(f"\n## Pipelining: {envs} envs, per chunk of {envs} envs: env stepping "
          f"{probe['time/env'] / chunk_steps * 1e3:.0f} ms + wait {wait * envs * 1e3:.0f} ms "
          f"({wait * 1e3:.2f} ms per env) = inference {probe['time/rollout'] / chunk_steps * 1e3:.0f} ms\n")
    print("| pipeline_stage_num | rollout window s | of it inference s | env s not hidden by inference | env steps / s "
          "| vs 1 stage |")
    print("|---|---|---|---|---|---|")
    base = None
    for stages in (1, 2):
        metrics = run(checkpoint, tmp / f"stages{stages}", envs, iterations,
                      PIPELINE + [f"rollout.pipeline_stage_num={stages}", f"env.train.step_wait_s={wait}"])[1:]
        throughput = statistics.mean(m["env/steps_per_second"] for m in metrics)
        base = base or throughput
        print(f"| {stages} | {statistics.mean(m['time/window'] for m in metrics):.2f} "
              f"| {statistics.mean(m['time/rollout'] for m in metrics):.2f} "
              f"| {statistics.mean(m['time/env'] for m in metrics):.2f} | {throughput:.0f} "
              f"| {throughput / base:.2f}x |", flush=True)


def sharding(checkpoint: Path, tmp: Path, envs: int, iterations: int) -> None:
    collocated = SHAPES["collocated (2 slots)"]
    print(f"\n## Actor data parallel: collocated on 2 slots, PPO, {envs} envs, {iterations} iterations "
          "(mean over iterations 2..)\n")
    print("| actor.data_parallel | update s | iteration s |")
    print("|---|---|---|")
    for mode in ("ddp", "fsdp2"):
        later = run(checkpoint, tmp / f"dp_{mode}", envs, iterations, collocated + [f"actor.data_parallel={mode}"])[1:]
        print(f"| {mode} | {statistics.mean(m['time/update'] for m in later):.2f} "
              f"| {statistics.mean(m['time/iteration'] for m in later):.2f} |", flush=True)
    nano, real = nano_and_real_pi0()
    trainable = {"nano, expert + heads": expert_and_heads(nano), "real pi0, expert + heads": expert_and_heads(real),
                 "real pi0, every weight": sum(p.numel() for p in real.parameters())}
    setups = [("ddp", 1), ("fsdp2", 2), ("fsdp2", 8)]
    print("\n| trainable weights | P | " + " | ".join(f"{m}, {a} actor{'s' * (a > 1)}: between / peak GB"
                                                   for m, a in setups) + " |")
    print("|---|---|" + "---|" * len(setups))
    for name, numel in trainable.items():
        cells = [" / ".join(f"{b / 1e9:.2f}" for b in training_state_bytes(numel, m, a)) for m, a in setups]
        print(f"| {name} | {numel / 1e6:.1f} M | " + " | ".join(cells) + " |")


def training_state_bytes(numel: int, data_parallel: str, actors: int) -> tuple[int, int]:
    """Bytes an actor process holds for P = `numel` fp32 trainable weights, between updates and at an update's
    peak. DDP: the weights 4P and AdamW's two moments 8P, plus the gradients 4P during an update. FSDP2: the
    rollout's full copy 4P and a 1/A share of the weights and moments 12P / A, plus during an update the gathered
    weights 4P and the share of the gradients 4P / A."""
    if data_parallel == "ddp":
        return 12 * numel, 16 * numel
    between = 4 * numel + 12 * numel // actors
    return between, between + 4 * numel + 4 * numel // actors


def gpu(checkpoint: Path, tmp: Path, envs: int, iterations: int) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--section gpu needs a CUDA device (the other sections run on CPU slots)")
    print(f"\n## One GPU: env process + fused rollout,actor, PPO, {envs} envs, {iterations} iterations "
          "(mean over iterations 2..)\n")
    print("| precision | iteration s | rollout window s | update s | peak GPU memory GB |")
    print("|---|---|---|---|---|")
    for precision in ("bf16", "fp32"):
        later = run(checkpoint, tmp / f"gpu_{precision}", envs, iterations, [
            "cluster.num_devices=1", "cluster.component_placement={env: 0, 'rollout,actor': 0}",
            f"actor.model.precision={precision}"])[1:]
        print(f"| {precision} | {statistics.mean(m['time/iteration'] for m in later):.2f} "
              f"| {statistics.mean(m['time/window'] for m in later):.2f} "
              f"| {statistics.mean(m['time/update'] for m in later):.2f} "
              f"| {max(m['memory/gpu_peak_gb'] for m in later):.2f} |", flush=True)


def _sync_worker(rank: int, store_path: str, sizes: list[int], repeats: int, out) -> None:
    import torch.distributed as dist

    from pi0lab.runtime.plan import plan_run
    from pi0lab.runtime.world import World

    torch.set_num_threads(1)
    plan = plan_run(load_config("tabletop_ppo_nano", ["cluster.num_devices=2",
                                                      "cluster.component_placement={'env,rollout': 0, actor: 1}"]))
    world = World.join(plan, rank, dist.FileStore(store_path, 2), torch.device("cpu"))
    for numel in sizes:
        params = [torch.zeros(numel)]
        world.broadcast_weights(params, 0)  # warm-up
        world.barrier()
        start = time.perf_counter()
        for version in range(1, repeats + 1):
            world.broadcast_weights(params, version)
        if rank == 0:  # the rollout: the time until it holds the new weights
            out.put((numel, (time.perf_counter() - start) / repeats))
        world.barrier()
    world.close()


def nano_and_real_pi0() -> tuple[Pi0, Pi0]:
    """The tabletop nano, and the real-size pi0 without memory (meta device: for counting)."""
    with torch.device("meta"):
        real = Pi0(Pi0Config.pi0())
    return Pi0(fresh_model_config(load_config("tabletop_sft_nano"))), real


def expert_and_heads(model: Pi0) -> int:
    """The weights `train_expert_only` trains: all but the prefix (SigLIP, projector, token embedding, VLM)."""
    prefix = (model.vision, model.projector, model.embed_tokens, model.vlm)
    return sum(p.numel() for p in model.parameters()) - sum(p.numel() for part in prefix for p in part.parameters())


def sync(tmp: Path, repeats: int) -> None:
    nano, real = nano_and_real_pi0()
    sizes = {"nano (all weights)": sum(p.numel() for p in nano.parameters()),
             "mid": 50_000_000,
             "real pi0, expert only": expert_and_heads(real)}
    context = mp.get_context("spawn")
    out = context.Queue()
    procs = [context.Process(target=_sync_worker, args=(r, str(tmp / "sync_store"), list(sizes.values()), repeats, out))
             for r in range(2)]
    for p in procs:
        p.start()
    times = dict(out.get(timeout=1800) for _ in sizes)
    for p in procs:
        p.join()
    print(f"\n## Weight sync over gloo (fp32, 2 processes, mean of {repeats})\n")
    print("| weights | parameters | MB | seconds | GB/s |")
    print("|---|---|---|---|---|")
    for name, numel in sizes.items():
        seconds = times[numel]
        print(f"| {name} | {numel / 1e6:.1f} M | {numel * 4 / 1e6:.0f} | {seconds:.4f} | {numel * 4 / seconds / 1e9:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=["shapes", "pipeline", "sharding", "sync", "gpu", "all"], default="all")
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = nano_checkpoint(tmp)
        if args.section in ("shapes", "all"):
            shapes(checkpoint, tmp, args.envs, args.iterations)
        if args.section in ("pipeline", "all"):
            pipeline(checkpoint, tmp, args.envs, args.iterations)
        if args.section in ("sharding", "all"):
            sharding(checkpoint, tmp, args.envs, args.iterations)
        if args.section in ("sync", "all"):
            sync(tmp, args.repeats)
        if args.section == "gpu":
            gpu(checkpoint, tmp, args.envs, args.iterations)


if __name__ == "__main__":
    main()
