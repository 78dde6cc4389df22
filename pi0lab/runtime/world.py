"""One process's view of a placed run: its roles, its process groups, and the few collectives training needs.

    world = World.join(plan, rank, store)       # in a worker (spawned, or started by torchrun)
    world = World.single(plan)                  # one fused process: every collective is a no-op

Groups (gloo carries control and CPU tensors; `tensor_backend` is NCCL on GPUs for gradients and weights):
    world       every process: stop decisions, checkpoint state
    exchange    rollout and actor processes: the finished rollout reaches every actor
    actor       actor processes: data-parallel gradients and metrics
    sync        actor rank 0 and the rollout processes that hold their own copy of the policy: weights
"""

import datetime
import os
import pickle
import socket
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from pi0lab.runtime.plan import RunPlan

STOP_KEY = "pi0lab/stop"

# Process-group timeout: a backstop only; a dead or hung process is caught by the supervisor's watch first.
GROUP_TIMEOUT = datetime.timedelta(minutes=30)


def node_name() -> str:
    """This process's node: its host and torchrun's node rank (GROUP_RANK; 0 when the supervisor spawned it).
    Processes of one node share memory (the env <-> rollout rings); two torchrun agents are two nodes even on
    one host."""
    return f"{socket.gethostname()}/{os.environ.get('GROUP_RANK', '0')}"


@dataclass
class World:
    plan: RunPlan
    rank: int
    device: torch.device
    groups: dict = field(default_factory=dict)  # name -> ProcessGroup (absent in a single process)
    store: dist.Store | None = None  # the supervisor's store (stop requests); None in one process or under torchrun
    tensor_backend: str = "gloo"
    hosts: list[str] = field(default_factory=list)  # each rank's node (`node_name`)
    _pending: dict = field(default_factory=dict)  # dst -> in-flight send works
    _buffers: dict = field(default_factory=dict)

    @classmethod
    def single(cls, plan: RunPlan, device: torch.device) -> "World":
        return cls(plan, 0, device)

    @classmethod
    def join(cls, plan: RunPlan, rank: int, store: dist.Store | None, device: torch.device,
             control: dist.Store | None = None) -> "World":
        """Join the process group (from `store`, or torchrun's env:// when None) and make the role groups.
        Every process makes every group, in the same order (new_group is collective)."""
        if store is None:  # torchrun: MASTER_ADDR / RANK / WORLD_SIZE from the environment
            dist.init_process_group("gloo", timeout=GROUP_TIMEOUT)
        else:
            dist.init_process_group("gloo", store=store, rank=rank, world_size=plan.world_size, timeout=GROUP_TIMEOUT)
        if dist.get_world_size() != plan.world_size or dist.get_rank() != rank:
            raise RuntimeError(f"the process group has {dist.get_world_size()} processes, but cluster.component_placement "
                               f"plans {plan.world_size}:\n{plan.describe()}")
        tensor_backend = "nccl" if device.type == "cuda" else "gloo"
        actor = plan.actor_ranks
        separate_rollouts = [r for r in plan.rollout_ranks if not plan.fused(r, "actor")]
        groups = {
            "exchange": dist.new_group(sorted(set(plan.rollout_ranks) | set(actor))),
            "actor": dist.new_group(actor, backend=tensor_backend),
            "sync": dist.new_group(sorted({actor[0], *separate_rollouts}), backend=tensor_backend)
                    if separate_rollouts else None,
        }
        hosts = [None] * plan.world_size
        dist.all_gather_object(hosts, node_name())
        return cls(plan, rank, device, groups, control, tensor_backend, hosts)

    # ------------------------------------------------------------------------------------ roles

    @property
    def components(self) -> tuple[str, ...]:
        return self.plan.workers[self.rank].components

    def has(self, component: str) -> bool:
        return component in self.components

    @property
    def distributed(self) -> bool:
        return bool(self.groups)

    @property
    def is_logger(self) -> bool:
        """Actor rank 0 logs metrics, evaluates and writes checkpoints."""
        return self.rank == self.plan.actor_ranks[0]

    @property
    def actor_index(self) -> int:
        return self.plan.actor_ranks.index(self.rank)

    @property
    def num_actors(self) -> int:
        return len(self.plan.actor_ranks)

    def name(self) -> str:
        return f"{','.join(self.components)} rank {self.rank}"

    # ------------------------------------------------------------------------------------ collectives

    def any(self, flag: bool) -> bool:
        """True on every process when `flag` is True on any (the stop decision)."""
        if not self.distributed:
            return flag
        value = torch.tensor([float(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def same_node(self, rank: int) -> bool:
        return not self.hosts or self.hosts[rank] == self.hosts[self.rank]

    def stop_signalled(self) -> bool:
        """Whether the supervisor asked the run to stop (Ctrl-C in the parent, Stop in a notebook)."""
        return self.store is not None and self.store.check([STOP_KEY])

    def broadcast_from_env(self, value):
        """The first env process's `value`, on every process (facts only an env knows, e.g. its step limit)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=self.plan.env_ranks[0])
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather_to_logger(self, obj) -> list | None:
        """Every process's `obj`, in rank order, on the logger (None elsewhere)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.plan.world_size if self.is_logger else None
        dist.gather_object(obj, out, dst=self.plan.actor_ranks[0])
        return out

    def exchange(self, obj) -> list:
        """All-gather `obj` over the rollout and actor processes (rank order)."""
        if not self.distributed:
            return [obj]
        members = sorted(set(self.plan.rollout_ranks) | set(self.plan.actor_ranks))
        out = [None] * len(members)
        dist.all_gather_object(out, obj, group=self.groups["exchange"])
        return out

    def sum_over_actors(self, values: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) a tensor over the actor processes, in place; returned for chaining."""
        if self.distributed and self.num_actors > 1:
            moved = values.to(self.device) if self.tensor_backend == "nccl" else values
            dist.all_reduce(moved, group=self.groups["actor"])
            if moved is not values:
                values.copy_(moved)
        return values

    def broadcast_weights(self, params: list[torch.Tensor], version: int) -> None:
        """Actor rank 0 -> every rollout process with its own policy copy: a header [version, numel], then one
        flat buffer (bf16 on GPUs). A receiver copies into its parameters only after the whole buffer arrived."""
        group = self.groups.get("sync")
        if group is None or self.rank not in dist.get_process_group_ranks(group):
            return
        src = self.plan.actor_ranks[0]
        wire = torch.bfloat16 if self.tensor_backend == "nccl" else torch.float32
        wire_device = self.device if self.tensor_backend == "nccl" else torch.device("cpu")
        numel = sum(p.numel() for p in params)
        header = torch.tensor([version, numel], dtype=torch.int64, device=wire_device)
        if self.rank == src:
            flat = torch.cat([p.detach().reshape(-1).to(wire_device, wire) for p in params])
            dist.broadcast(header, src, group=group)
            dist.broadcast(flat, src, group=group)
            return
        dist.broadcast(header, src, group=group)
        got_version, got_numel = (int(x) for x in header.tolist())
        if got_numel != numel or got_version != version:
            raise RuntimeError(f"weight sync: expected version {version} with {numel} values, got version {got_version} "
                               f"with {got_numel} (actor and rollout built different trainable parameter sets)")
        flat = torch.empty(numel, dtype=wire, device=wire_device)
        dist.broadcast(flat, src, group=group)
        offset = 0
        with torch.no_grad():
            for p in params:
                p.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()

    # ------------------------------------------------------------------------------------ env <-> rollout

    def send_message(self, obj, dst: int) -> None:
        """A pickled message (length, then bytes) to `dst`, sent without blocking: the previous message to `dst`
        is waited for first, so a receiver that reads its messages in order never deadlocks a sender."""
        for work in self._pending.pop(dst, []):
            work.wait()
        data = torch.frombuffer(bytearray(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)), dtype=torch.uint8)
        size = torch.tensor([data.numel()], dtype=torch.int64)
        self._pending[dst] = [dist.isend(size, dst), dist.isend(data, dst)]
        self._buffers[dst] = (size, data)  # alive until the sends complete

    def receive_message(self, src: int):
        size = torch.empty(1, dtype=torch.int64)
        dist.recv(size, src)
        data = torch.empty(int(size.item()), dtype=torch.uint8)
        dist.recv(data, src)
        return pickle.loads(data.numpy().tobytes())

    def flush(self) -> None:
        """Wait for every message sent so far."""
        for works in self._pending.values():
            for work in works:
                work.wait()
        self._pending.clear()
        self._buffers.clear()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
