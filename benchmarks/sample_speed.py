"""pi0 sampling and training speed: KV-cached sampling vs recomputing the prefix at every step.

For each model size and batch size it measures (best of `--repeats` wall times: the minimum is the
least disturbed by other processes on a shared machine):
    prefix    one VLM pass over the prefix (fills the cache)
    step      one expert-only denoise step against the cache
    cached    sample_actions (prefix once + N expert steps)
    recompute sample_actions(use_cache=False) (prefix + suffix together, N times)
    train     one compute_loss + backward + AdamW step

Targets: cached within 10% of (prefix + N * step); cached >= 2x faster than recompute at 224 px.

    python benchmarks/sample_speed.py                  # nano (64 px) and mid (224 px, 3 cameras), CPU
    python benchmarks/sample_speed.py --clock cpu --threads 1   # on a CPU shared with other jobs
    python benchmarks/sample_speed.py --sizes pi0 --device cuda --batches 1 8
"""

import argparse
import time

import torch

from pi0lab.models import GemmaConfig, Observation, Pi0, Pi0Config, SiglipConfig

SIZES = {
    "nano": Pi0Config.nano(),
    "mid": Pi0Config(
        vision=SiglipConfig(width=192, depth=3, mlp_dim=768, num_heads=3, patch_size=14, image_size=224),
        vlm=GemmaConfig(width=256, depth=3, mlp_dim=1024, num_heads=4, num_kv_heads=1, head_dim=64),
        expert=GemmaConfig(width=128, depth=3, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=64),
        vocab_size=1024,
    ),
    "pi0": Pi0Config.pi0(),
}


def observation(config: Pi0Config, batch: int, device) -> Observation:
    size, length = config.vision.image_size, config.max_token_len
    return Observation(
        images={c: torch.rand(batch, 3, size, size, device=device) * 2 - 1 for c in config.cameras},
        image_masks={c: torch.ones(batch, dtype=torch.bool, device=device) for c in config.cameras},
        state=torch.randn(batch, config.action_dim, device=device),
        tokens=torch.randint(0, config.vocab_size, (batch, length), device=device),
        token_mask=torch.arange(length, device=device)[None].expand(batch, length) < 20,
    )


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def timed(fn, repeats: int, device) -> float:
    """Fastest of `repeats` calls (seconds) after one warm-up call."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync()
        times.append(clock() - start)
    return min(times)


def bench(name: str, batch: int, num_steps: int, repeats: int, device, skip_recompute_above: int) -> dict:
    config = SIZES[name]
    torch.manual_seed(0)
    model = Pi0(config).to(device)
    obs = observation(config, batch, device)
    x = torch.randn(batch, config.action_horizon, config.action_dim, device=device)
    t = torch.ones(batch, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    row = {"size": name, "px": config.vision.image_size, "cameras": len(config.cameras), "batch": batch}
    model.eval()
    with torch.inference_mode(), autocast:
        row["prefix"] = timed(lambda: model.prefill(obs), repeats, device)
        cache = model.prefill(obs)
        row["step"] = timed(lambda: model.denoise_step(cache, obs.state, x, t), repeats, device)
        row["cached"] = timed(lambda: model.sample_actions(obs, num_steps=num_steps), repeats, device)
        if batch <= skip_recompute_above:
            row["recompute"] = timed(lambda: model.sample_actions(obs, num_steps=num_steps, use_cache=False),
                                     repeats, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    actions = torch.randn(batch, config.action_horizon, config.action_dim, device=device)

    def train_step():
        with autocast:
            loss = model.compute_loss(obs, actions).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if batch <= skip_recompute_above:
        try:
            row["train"] = timed(train_step, repeats, device)
        except torch.OutOfMemoryError:  # full fine-tuning of the real size with AdamW needs more than one GPU
            row["train"] = "OOM"
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["nano", "mid"], choices=sorted(SIZES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--num-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", default="wall", choices=sorted(CLOCKS),
                        help="wall time, or this process's CPU time (robust when other jobs share the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--max-recompute-batch", type=int, default=8,
                        help="skip recompute/train timings above this batch (they dominate the run time on CPU)")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, N = {args.num_steps}, "
          f"{args.clock} clock")
    header = (f"{'size':>5} {'px':>4} {'cams':>4} {'batch':>5} | {'prefix':>8} {'step':>8} {'cached':>8} "
              f"{'pfx+N*st':>8} {'ratio':>6} | {'recomp':>8} {'speedup':>7} | {'train':>8}")
    print(header)
    print("-" * len(header))
    for name in args.sizes:
        for batch in args.batches:
            r = bench(name, batch, args.num_steps, args.repeats, device, args.max_recompute_batch)
            ideal = r["prefix"] + args.num_steps * r["step"]
            recompute = f"{r['recompute'] * 1e3:8.1f} {r['recompute'] / r['cached']:6.2f}x" if "recompute" in r \
                else f"{'-':>8} {'-':>7}"
            train = r.get("train", "-")
            train = f"{train * 1e3:8.1f}" if isinstance(train, float) else f"{train:>8}"
            print(f"{r['size']:>5} {r['px']:>4} {r['cameras']:>4} {r['batch']:>5} | {r['prefix'] * 1e3:8.1f} "
                  f"{r['step'] * 1e3:8.1f} {r['cached'] * 1e3:8.1f} {ideal * 1e3:8.1f} {r['cached'] / ideal:6.3f} | "
                  f"{recompute} | {train}", flush=True)
    print("times in ms; ratio = cached / (prefix + N * step) (target <= 1.10); speedup = recompute / cached "
          "(target >= 2 at 224 px)")


if __name__ == "__main__":
    main()
