"""Component placement: which devices the env, rollout and actor roles run on.

`cluster.component_placement` maps component names to device sets (DESIGN §7):

    env: 0-3          devices 0, 1, 2, 3 (ranges are inclusive)
    rollout: 4-7
    actor: all        every device
    env,rollout: 0,2  several components on the same devices

On a CPU-only machine the devices are numbered CPU slots, so the same configs run without a GPU.
"""

from collections.abc import Mapping

COMPONENTS = ("env", "rollout", "actor")


def parse_device_set(spec: str | int, num_devices: int) -> list[int]:
    """Parse "all", "3", "0-3" or "0-1,4,6-7" into a sorted list of device indices < num_devices."""
    if num_devices < 1:
        raise ValueError(f"num_devices must be >= 1, got {num_devices}")
    text = str(spec).strip()
    if text == "all":
        return list(range(num_devices))
    devices: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                first, last = (int(x) for x in part.split("-"))
                if first > last:
                    raise ValueError
                devices.extend(range(first, last + 1))
            else:
                devices.append(int(part))
        except ValueError:
            raise ValueError(
                f"bad device set {spec!r}: use 'all', an index '3', an inclusive range '0-3', "
                f"or a comma list '0-1,4'"
            ) from None
    if len(set(devices)) != len(devices):
        raise ValueError(f"device set {spec!r} names a device twice")
    out_of_range = [d for d in devices if d < 0 or d >= num_devices]
    if out_of_range:
        raise ValueError(
            f"device set {spec!r} names device(s) {out_of_range}, but only 0-{num_devices - 1} exist"
        )
    return sorted(devices)


def parse_placement(component_placement: Mapping[str, str | int], num_devices: int) -> dict[str, list[int]]:
    """Map each of env / rollout / actor to its devices; every component must be placed exactly once.

    >>> parse_placement({"env": "0-1", "rollout,actor": "all"}, 4)
    {'env': [0, 1], 'rollout': [0, 1, 2, 3], 'actor': [0, 1, 2, 3]}
    """
    placement: dict[str, list[int]] = {}
    for key, spec in component_placement.items():
        devices = parse_device_set(spec, num_devices)
        for name in (n.strip() for n in str(key).split(",")):
            if name not in COMPONENTS:
                raise ValueError(f"unknown component {name!r} in placement key {key!r}; valid: {', '.join(COMPONENTS)}")
            if name in placement:
                raise ValueError(f"component {name!r} is placed twice in cluster.component_placement")
            placement[name] = devices
    missing = [c for c in COMPONENTS if c not in placement]
    if missing:
        raise ValueError(f"cluster.component_placement does not place {', '.join(missing)}")
    return {c: placement[c] for c in COMPONENTS}
