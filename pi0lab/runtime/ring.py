"""A preallocated shared-memory slot ring: env observations reach a rollout process on the same node without
pickling or sockets.

    ring = ObsRing.create(name, num_envs, image_size, state_dim)      # the env process, once per slice
    ring.write(slot, obs)                                             # main / wrist images, states into a slot
    ring = ObsRing.attach(name, num_envs, image_size, state_dim)      # the rollout process
    obs = ring.read(slot, obs)                                        # copies out of the slot

Each slot holds main_images, wrist_images uint8 [N,H,W,3] and states float32 [N,S]. The env writes
chunk t's observation into slot t mod SLOTS and sends only the slot number; the rollout copies it out
before it sends the next command, and the env writes a slot again only after that command, so a slot is
never read while it is being written.
"""

from multiprocessing import shared_memory

import numpy as np

SLOTS = 2
FIELDS = ("main_images", "wrist_images", "states")


def _layout(num_envs: int, image_size: int, state_dim: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    image = ((num_envs, image_size, image_size, 3), np.dtype(np.uint8))
    return {"main_images": image, "wrist_images": image, "states": ((num_envs, state_dim), np.dtype(np.float32))}


class ObsRing:
    def __init__(self, memory: shared_memory.SharedMemory, layout: dict, owner: bool):
        self.memory, self.owner = memory, owner
        self.slots: list[dict[str, np.ndarray]] = []
        offset = 0
        for _ in range(SLOTS):
            arrays = {}
            for name, (shape, dtype) in layout.items():
                arrays[name] = np.ndarray(shape, dtype, buffer=memory.buf, offset=offset)
                offset += int(np.prod(shape)) * dtype.itemsize
            self.slots.append(arrays)

    @staticmethod
    def size(layout: dict) -> int:
        return SLOTS * sum(int(np.prod(shape)) * dtype.itemsize for shape, dtype in layout.values())

    @classmethod
    def create(cls, name: str, num_envs: int, image_size: int, state_dim: int) -> "ObsRing":
        layout = _layout(num_envs, image_size, state_dim)
        return cls(shared_memory.SharedMemory(name=name, create=True, size=cls.size(layout)), layout, owner=True)

    @classmethod
    def attach(cls, name: str, num_envs: int, image_size: int, state_dim: int) -> "ObsRing":
        memory = shared_memory.SharedMemory(name=name)  # the env process owns it and unlinks it at its close
        return cls(memory, _layout(num_envs, image_size, state_dim), owner=False)

    def write(self, slot: int, obs: dict) -> dict:
        """Copy obs's arrays into `slot`; return obs without them (what still travels as a message)."""
        for name in FIELDS:
            self.slots[slot][name][...] = obs[name]
        return {k: v for k, v in obs.items() if k not in FIELDS}

    def read(self, slot: int, rest: dict) -> dict:
        """The observation of `slot` (copied out, so the slot may be written again) with the message's keys."""
        return {**rest, **{name: self.slots[slot][name].copy() for name in FIELDS}}

    def close(self) -> None:
        self.slots.clear()
        self.memory.close()
        if self.owner:
            self.memory.unlink()
