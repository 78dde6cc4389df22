"""The run plan: placement + world size -> one process per (placement key, device), checked before anything starts.

    plan = plan_run(cfg)             # cfg: a loaded training config
    plan.workers                     # [Worker(rank=0, device=0, components=("env",)), ...]
    plan.env_ranks, plan.rollout_ranks, plan.actor_ranks

A placement key that joins components (`env,rollout,actor: all`) fuses them: one process per device runs
all three, and its rollout uses its actor's module (no weight transfer). Components of different keys
that share a device run in separate processes on it (they offload between phases).

How envs reach rollouts. Every env process splits its envs into `pipeline_stage_num` stages; the E x S
stage batches and the R rollout processes meet in K = max(E x S, R) equal *slices* of envs, numbered
in env order: env rank e, stage s holds slices [(e S + s) K/(E S), ...) and rollout rank r serves slices
[r K/R, (r+1) K/R). So K must be a multiple of both E x S and R, and the envs must split into K slices.
"""

from dataclasses import dataclass

from omegaconf import DictConfig

from pi0lab.runtime.placement import COMPONENTS, parse_placement


class PlanError(ValueError):
    """A placement that cannot run; the message names the config keys to change."""


@dataclass(frozen=True)
class Worker:
    rank: int  # global rank in the process group
    device: int  # device index of the node (a GPU, or a CPU slot)
    components: tuple[str, ...]  # the roles this process runs, in COMPONENTS order


@dataclass(frozen=True)
class Slice:
    index: int  # k in 0..K-1, in env order
    env_rank: int  # index into plan.env_ranks
    stage: int
    offset: int  # first env of the slice within its env rank
    size: int


@dataclass(frozen=True)
class RunPlan:
    workers: tuple[Worker, ...]
    num_stages: int
    envs_per_rank: int
    slices: tuple[Slice, ...]
    device_type: str  # "cuda" (devices are GPUs) or "cpu" (devices are CPU slots)

    @property
    def world_size(self) -> int:
        return len(self.workers)

    def ranks_of(self, component: str) -> list[int]:
        return [w.rank for w in self.workers if component in w.components]

    @property
    def env_ranks(self) -> list[int]:
        return self.ranks_of("env")

    @property
    def rollout_ranks(self) -> list[int]:
        return self.ranks_of("rollout")

    @property
    def actor_ranks(self) -> list[int]:
        return self.ranks_of("actor")

    def slices_of_rollout(self, rollout_index: int) -> list[Slice]:
        per = len(self.slices) // len(self.rollout_ranks)
        return list(self.slices[rollout_index * per:(rollout_index + 1) * per])

    def slices_of_env(self, env_index: int, stage: int) -> list[Slice]:
        return [s for s in self.slices if s.env_rank == env_index and s.stage == stage]

    def rollout_of_slice(self, k: int) -> int:
        """The global rank of the rollout process that serves slice k."""
        return self.rollout_ranks[k // (len(self.slices) // len(self.rollout_ranks))]

    def fused(self, rank: int, *components: str) -> bool:
        return all(c in self.workers[rank].components for c in components)

    def describe(self) -> str:
        """One line per process: `rank 0  device 0  env,rollout,actor`."""
        return "\n".join(f"rank {w.rank}  {self.device_type} {w.device}  {','.join(w.components)}" for w in self.workers)


def plan_run(cfg: DictConfig, cuda_devices: int = 0) -> RunPlan:
    """The processes of `cluster.component_placement` on `cluster.num_devices` devices, or a `PlanError`.

    cuda_devices: GPUs visible on this node (0: devices are CPU slots). Devices are numbered across nodes:
    node n holds devices n * num_devices ... (n + 1) * num_devices - 1.
    """
    cluster = cfg.cluster
    total_devices = cluster.num_nodes * cluster.num_devices  # devices are numbered across the nodes
    try:
        placement = parse_placement(cluster.component_placement, total_devices)
    except ValueError as err:
        raise PlanError(f"cluster.component_placement: {err}") from None
    groups = _placement_groups(cluster.component_placement)
    workers = []
    for components in groups:
        for device in placement[components[0]]:
            workers.append((device, components))
    workers.sort(key=lambda w: (COMPONENTS.index(w[1][0]), w[0]))
    plan_workers = tuple(Worker(rank, device, comps) for rank, (device, comps) in enumerate(workers))
    device_type = "cuda" if cuda_devices > 0 else "cpu"
    if device_type == "cuda":
        _check_cuda(plan_workers, cluster.num_devices, cuda_devices)
    if cluster.num_nodes > 1 and len(plan_workers) % cluster.num_nodes:
        raise PlanError(f"{len(plan_workers)} processes do not split over cluster.num_nodes={cluster.num_nodes} "
                        "torchrun agents (--nproc-per-node must be the same on every node)")

    num_env, num_rollout, num_actor = (sum(c in w.components for w in plan_workers) for c in COMPONENTS)
    stages = cfg.rollout.pipeline_stage_num
    total = cfg.env.train.total_num_envs
    if total % num_env:
        raise PlanError(f"env.train.total_num_envs={total} does not split over the {num_env} env processes of "
                        "cluster.component_placement: make it a multiple of the env device count")
    per_rank = total // num_env
    if per_rank % stages:
        raise PlanError(f"each env process holds {per_rank} envs (env.train.total_num_envs={total} / {num_env} env "
                        f"processes), which rollout.pipeline_stage_num={stages} does not divide")
    num_slices = max(num_env * stages, num_rollout)
    if num_slices % (num_env * stages) or num_slices % num_rollout:
        raise PlanError(f"{num_env} env processes x rollout.pipeline_stage_num={stages} stage batches cannot be shared "
                        f"evenly by {num_rollout} rollout processes: make one a multiple of the other")
    if total % num_slices:
        raise PlanError(f"env.train.total_num_envs={total} does not split into the {num_slices} env slices that "
                        f"{num_rollout} rollout processes serve: make it a multiple of {num_slices}")
    size = total // num_slices
    if cfg.algorithm.adv_type == "grpo" and size % cfg.algorithm.group_size:
        raise PlanError(f"algorithm.group_size={cfg.algorithm.group_size} does not divide the {size} envs of each env "
                        f"slice (env.train.total_num_envs={total} over {num_slices} slices): a GRPO group must not be "
                        "split across env processes or pipeline stages")
    if cfg.algorithm.adv_type == "embodied_sac" and (len(plan_workers) > 1 or stages > 1):
        raise PlanError("algorithm.adv_type=embodied_sac (DSRL) runs in one process: set cluster.num_devices=1 and "
                        "cluster.component_placement to {actor,env,rollout: all}, rollout.pipeline_stage_num=1")
    if cfg.actor.data_parallel == "fsdp2" and num_actor < 2:
        raise PlanError("actor.data_parallel=fsdp2 shards the actor over its processes, but cluster.component_placement "
                        f"places {num_actor} actor process: place actor on >= 2 devices, or set actor.data_parallel=ddp")
    global_batch, micro = cfg.actor.global_batch_size, cfg.actor.micro_batch_size
    if global_batch % num_actor or (global_batch // num_actor) % micro:
        raise PlanError(f"actor.global_batch_size={global_batch} must split into {num_actor} actor shares that "
                        f"actor.micro_batch_size={micro} divides (each actor process takes 1/{num_actor} of every batch)")
    slices = []
    per_env_stage = num_slices // (num_env * stages)
    for k in range(num_slices):
        batch, j = divmod(k, per_env_stage)
        env_rank, stage = divmod(batch, stages)
        offset = stage * (per_rank // stages) + j * size
        slices.append(Slice(k, env_rank, stage, offset, size))
    return RunPlan(plan_workers, stages, per_rank, tuple(slices), device_type)


def _placement_groups(component_placement) -> list[tuple[str, ...]]:
    """The components of each placement key, in COMPONENTS order (a key's components share processes)."""
    groups = []
    for key in component_placement:
        names = {n.strip() for n in str(key).split(",")}
        groups.append(tuple(c for c in COMPONENTS if c in names))
    return groups


def _check_cuda(workers: tuple[Worker, ...], num_devices: int, cuda_devices: int) -> None:
    if num_devices > cuda_devices:
        raise PlanError(f"cluster.num_devices={num_devices} (per node) but this node has {cuda_devices} CUDA "
                        "device(s): lower cluster.num_devices (or run on CPU slots, without CUDA)")
    # NCCL joins one rank per GPU in a communicator. The actors' group has one process per device by construction;
    # the weight-sync group is actor rank 0 and the rollout processes not fused with an actor. Processes that
    # share a GPU outside one communicator (env processes, an actor beside a rollout) are fine.
    actors = [w for w in workers if "actor" in w.components]
    sync = [actors[0]] + [w for w in workers if "rollout" in w.components and "actor" not in w.components]
    if len(sync) > 1:
        seen: dict[int, Worker] = {}
        for w in sync:
            if w.device in seen:
                names = " and ".join(",".join(x.components) for x in (seen[w.device], w))
                raise PlanError(f"GPU {w.device} would hold {names} as two ranks of the weight-sync group (actor rank 0 "
                                "and every rollout process with its own copy), and NCCL cannot join several ranks on "
                                "one GPU: fuse them in one placement key (e.g. `rollout,actor: 0-3`) or move the "
                                f"rollouts off GPU {w.device}")
            seen[w.device] = w
