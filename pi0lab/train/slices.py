"""Env slices across processes: a rollout process drives the envs of an env process, one message per chunk.

The rollout side holds a `RemoteEnvSlice` per slice it serves (the same `send_reset / send_step / receive /
end` surface as a local `EnvRole`, so `collect_rollouts` runs unchanged); the env process runs
`serve_env_slices`, answering its slices' commands in slice order until every rollout has ended its window.

    rollout -> env:  ("reset", k) | ("step", k, actions [n,C,7]) | ("end", k)
    env -> rollout:  obs (after reset) | (obs, rewards [n,C], terminated [n,C], truncated [n,C], info) (after step)

When both processes are on one node, obs's images and states go through the slice's shared-memory ring
(`pi0lab.runtime.ring`) and the message carries only the slot (and, once, the ring's name and shape);
across nodes everything travels in the message (gloo send / recv).
"""

import os

import numpy as np

from pi0lab.runtime.plan import Slice
from pi0lab.runtime.ring import SLOTS, ObsRing
from pi0lab.runtime.spans import span
from pi0lab.runtime.world import World
from pi0lab.train.roles import EnvRole


class RemoteEnvSlice:
    """Slice `piece`'s envs, living in the env process that owns them."""

    remote = True

    def __init__(self, world: World, piece: Slice):
        self.world = world
        self.index = piece.index
        self.env_rank = world.plan.env_ranks[piece.env_rank]
        self.ring: ObsRing | None = None

    def send_reset(self) -> None:
        self.world.send_message(("reset", self.index), self.env_rank)

    def send_step(self, actions: np.ndarray) -> None:
        self.world.send_message(("step", self.index, actions), self.env_rank)

    def receive(self):
        answer = self.world.receive_message(self.env_rank)
        if isinstance(answer, tuple):  # after a step
            return (self._observation(answer[0]), *answer[1:])
        return self._observation(answer)

    def _observation(self, obs: dict) -> dict:
        if "_slot" not in obs:
            return obs
        if "_ring" in obs:
            if self.ring is not None:
                self.ring.close()
            self.ring = ObsRing.attach(*obs.pop("_ring"))
        return self.ring.read(obs.pop("_slot"), obs)

    def end(self) -> None:
        self.world.send_message(("end", self.index), self.env_rank)

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()


class EnvSlices:
    """An env process's slices: their envs and, for rollouts on this node, their shared-memory rings."""

    def __init__(self, world: World, envs: dict[int, EnvRole]):
        self.world, self.envs = world, envs
        self.rings: dict[int, ObsRing] = {}
        self.steps: dict[int, int] = {}
        self.announced: set[int] = set()
        self.shapes: dict[int, tuple] = {}
        for k, env in envs.items():
            if world.same_node(world.plan.rollout_of_slice(k)):
                shape = (f"pi0lab-{os.getpid()}-{k}", env.num_envs, env.envs.image_size, env.envs.state_dim)
                self.rings[k], self.shapes[k] = ObsRing.create(*shape), shape

    def pack(self, k: int, obs: dict) -> dict:
        """obs as it travels: through slice k's ring when it has one."""
        ring = self.rings.get(k)
        if ring is None:
            return obs
        slot = self.steps.get(k, 0) % SLOTS
        self.steps[k] = self.steps.get(k, 0) + 1
        packed = {**ring.write(slot, obs), "_slot": slot}
        if k not in self.announced:
            packed["_ring"] = self.shapes[k]
            self.announced.add(k)
        return packed

    def close(self) -> None:
        for ring in self.rings.values():
            ring.close()
        for env in self.envs.values():
            env.close()


def serve_env_slices(world: World, slices: EnvSlices) -> None:
    """Answer the rollouts' commands for this process's slices (in slice order, round robin) until each slice's
    rollout has sent "end": one rollout window."""
    plan, envs = world.plan, slices.envs
    active = sorted(envs)
    while active:
        for k in list(active):
            src = plan.rollout_of_slice(k)
            command = world.receive_message(src)
            kind, index = command[0], command[1]
            if index != k:
                raise RuntimeError(f"env rank {world.rank} expected a command for slice {k} from rank {src}, "
                                   f"got one for slice {index}")
            if kind == "end":
                active.remove(k)
            elif kind == "reset":
                with span("env"):
                    answer = slices.pack(k, envs[k].reset())
                world.send_message(answer, src)
            elif kind == "step":
                with span("env"):
                    obs, *rest = envs[k].step(command[2])
                    answer = (slices.pack(k, obs), *rest)
                world.send_message(answer, src)
            else:
                raise RuntimeError(f"env rank {world.rank}: unknown command {kind!r} from rank {src}")
    world.flush()
