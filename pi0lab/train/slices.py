"""Env slices across processes: a rollout process drives the envs of an env process, one message per chunk.

The rollout side holds a `RemoteEnvSlice` per slice it serves (the same `send_reset / send_step / receive /
end` surface as a local `EnvRole`, so `collect_rollouts` runs unchanged); the env process runs
`serve_env_slices`, answering its slices' commands in slice order until every rollout has ended its window.

    rollout -> env:  ("reset", k) | ("step", k, actions [n,C,7]) | ("end", k)
    env -> rollout:  obs (after reset) | (obs, rewards [n,C], terminated [n,C], truncated [n,C], info) (after step)
"""

import numpy as np

from pi0lab.runtime.plan import Slice
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

    def send_reset(self) -> None:
        self.world.send_message(("reset", self.index), self.env_rank)

    def send_step(self, actions: np.ndarray) -> None:
        self.world.send_message(("step", self.index, actions), self.env_rank)

    def receive(self):
        return self.world.receive_message(self.env_rank)

    def end(self) -> None:
        self.world.send_message(("end", self.index), self.env_rank)


def serve_env_slices(world: World, envs: dict[int, EnvRole]) -> None:
    """Answer the rollouts' commands for this process's slices (in slice order, round robin) until each slice's
    rollout has sent "end": one rollout window."""
    plan = world.plan
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
                    answer = envs[k].reset()
                world.send_message(answer, src)
            elif kind == "step":
                with span("env"):
                    answer = envs[k].step(command[2])
                world.send_message(answer, src)
            else:
                raise RuntimeError(f"env rank {world.rank}: unknown command {kind!r} from rank {src}")
    world.flush()
