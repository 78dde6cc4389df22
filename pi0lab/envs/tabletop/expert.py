"""The scripted expert: a privileged waypoint planner that reads the true world state.

It is stateless: every step it looks at the first goal that does not hold yet and at the hand,
picks the next waypoint (eef target, yaw target, gripper command), and moves there with a
dead-beat controller, a = clip((target - eef) / POS_STEP, -1, 1). Pick and place:

    hover above the thing (turned to close across it) -> descend to its centre, fingers opening
    -> close -> carry at a safe height to a free spot over the target -> lower until the thing is
    1.5 cm above the surface -> open (the thing drops and the goal holds).

The drawer: the same approach to the handle (fingers turned to close across it), close, pull.
A failed grasp (fingers closed on nothing) opens the fingers and tries again, so the expert also
recovers from action noise. `expert_chunk` plans a chunk by running the expert on a copy of the
world, so noise added to one action is seen by the next.
"""

from __future__ import annotations

import math

import numpy as np

from pi0lab.envs.tabletop.suites import Resolved, holds
from pi0lab.envs.tabletop.world import (
    BAR, BASKET, HANDLE, HANDLE_HALF, NOTHING, PLATE, POS_STEP, YAW_STEP, World,
)

HOVER = 0.08  # hover this far above a grasp point
RELEASE_GAP = 0.015  # release a thing this far above the surface
CARRY_CLEARANCE = 0.06  # carry a thing this far above the highest thing in the scene
REACHED = 0.015  # a waypoint counts as reached within this distance (m) ...
ALIGNED = 0.12  # ... and yaw error (rad)
SLOTS = ((0.0, -0.045), (0.0, 0.045), (0.0, 0.0))  # spots on a plate / in a basket: two fit side by side


def _nearest_turn(angle: float, current: float) -> float:
    """The yaw equivalent to `angle` modulo pi (a parallel gripper is symmetric under a half turn)
    that lies in the gripper's range [-pi/2, pi/2] and is closest to `current`."""
    options = [angle + k * math.pi for k in range(-3, 4) if abs(angle + k * math.pi) <= math.pi / 2 + 1e-9]
    return min(options, key=lambda a: abs(a - current))


def grasp_yaw(world: World, i: int) -> float:
    """Gripper yaw that closes across a thing: across a bar's short side; for a cube the nearest
    of its face normals."""
    thing = world.things[i]
    if thing.kind == BAR:
        return _nearest_turn(thing.yaw + math.pi / 2, world.yaw)
    candidates = [_nearest_turn(thing.yaw + q * math.pi / 2, world.yaw) for q in range(2)]
    return min(candidates, key=lambda a: abs(a - world.yaw))


def _move(world: World, target, yaw: float, close: bool) -> np.ndarray:
    """Dead-beat step towards (target eef, yaw) with the gripper command."""
    action = np.zeros(7)
    action[:3] = np.clip((np.asarray(target) - world.eef) / POS_STEP, -1, 1)
    action[5] = np.clip((yaw - world.yaw) / YAW_STEP, -1, 1)
    action[6] = 1.0 if close else -1.0
    return action


def _at(world: World, target, yaw: float) -> bool:
    return np.abs(np.asarray(target) - world.eef).max() < REACHED and abs(yaw - world.yaw) < ALIGNED


def _approach_and_close(world: World, point, yaw: float, width: float) -> np.ndarray:
    """Hover over `point` turned to `yaw`, descend with the fingers opening, close; if the fingers
    have closed past `width` without a grasp, open and close again."""
    x, y, z = point
    grasp = (x, y, z)
    above = abs(world.eef[0] - x) < REACHED and abs(world.eef[1] - y) < REACHED and abs(world.yaw - yaw) < ALIGNED
    if not above:
        far = np.hypot(world.eef[0] - x, world.eef[1] - y) > 0.03
        height = max(world.eef[2], z + HOVER) if far else z + HOVER
        return _move(world, (x, y, height), yaw, close=False)
    if not _at(world, grasp, yaw):
        return _move(world, grasp, yaw, close=False)
    return _move(world, grasp, yaw, close=world.gap >= width)


def _free_spot(world: World, thing: int, target: int) -> tuple[float, float]:
    """A spot over the target whose point is not over anything already resting on it."""
    base = world.things[target]
    if base.kind not in (PLATE, BASKET):
        return base.pos[0], base.pos[1]
    others = [j for j, s in enumerate(world.support) if s == target and j != thing]
    for dx, dy in SLOTS:
        x, y = base.pos[0] + dx, base.pos[1] + dy
        if all(math.hypot(x - world.things[j].pos[0], y - world.things[j].pos[1]) > 0.05 for j in others):
            return x, y
    return base.pos[0], base.pos[1]


def _place_yaw(world: World, thing: int) -> float:
    """Bars are put down lengthwise along x (so two things fit on a plate); cubes as they are."""
    if world.things[thing].kind == BAR:
        return _nearest_turn(world.yaw - world.things[thing].yaw, world.yaw)
    return world.yaw


def _pick_and_place(world: World, thing: int, target: int) -> np.ndarray:
    if world.held not in (NOTHING, thing):
        return _move(world, world.eef + (0, 0, 0.05), world.yaw, close=False)
    t = world.things[thing]
    if world.held == NOTHING:
        yaw = grasp_yaw(world, thing)
        return _approach_and_close(world, t.pos, yaw, world.width_across(thing, yaw))
    x, y = _free_spot(world, thing, target)
    offset_z = t.pos[2] - world.eef[2]
    release_z = world.top(target) + RELEASE_GAP + t.half[2] - offset_z
    highest = max(world.top(j) if world.things[j].kind != BASKET else world.things[j].pos[2] + world.things[j].half[2]
                  for j in range(len(world.things)) if j != thing)
    carry_z = max(release_z, highest + CARRY_CLEARANCE + t.half[2] - offset_z)
    yaw = _place_yaw(world, thing)
    if math.hypot(world.eef[0] - x, world.eef[1] - y) > REACHED or abs(world.yaw - yaw) > ALIGNED:
        lift_first = world.eef[2] < carry_z - REACHED and math.hypot(world.eef[0] - x, world.eef[1] - y) > 0.03
        if lift_first:
            return _move(world, (world.eef[0], world.eef[1], carry_z), yaw, close=True)
        return _move(world, (x, y, carry_z), yaw, close=True)
    if abs(world.eef[2] - release_z) > REACHED:
        return _move(world, (x, y, release_z), yaw, close=True)
    return _move(world, (x, y, release_z), yaw, close=False)


def _open_drawer(world: World) -> np.ndarray:
    if world.held == HANDLE:
        return _move(world, world.eef - (0, 0.05, 0), world.yaw, close=True)
    if world.held != NOTHING:
        return _move(world, world.eef + (0, 0, 0.05), world.yaw, close=False)
    yaw = math.pi / 2 if world.yaw >= 0 else -math.pi / 2
    return _approach_and_close(world, world.handle_pos(), yaw, 2 * HANDLE_HALF[1])


def expert_action(world: World, goals: tuple[Resolved, ...]) -> np.ndarray:
    """One expert action [7] for the first goal that does not hold yet (hold still once all hold)."""
    for goal in goals:
        if not holds(world, goal):
            if goal.kind == "open":
                return _open_drawer(world)
            return _pick_and_place(world, goal.thing, goal.target)
    return _move(world, world.eef, world.yaw, close=world.held != NOTHING)


def expert_chunk(world: World, goals, chunk: int, noise_std: float, rng: np.random.Generator | None) -> np.ndarray:
    """Plan `chunk` actions [chunk, 7] by running the (optionally noisy) expert on a copy of the world."""
    sim = world.copy()
    actions = np.zeros((chunk, 7))
    for k in range(chunk):
        action = expert_action(sim, goals)
        if noise_std > 0:
            action[:6] += noise_std * rng.standard_normal(6)
        actions[k] = np.clip(action, -1, 1)
        sim.step(actions[k])
    return actions
