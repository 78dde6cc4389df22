"""The four tabletop suites (mirroring LIBERO's): tasks, instructions, goals and initial scenes.

- spatial: two identical red cubes, a plate and a basket; which cube is meant depends on where it
  is ("the red cube on the left", "... next to the basket").
- object: four different things (5 colours x {cube, bar}) and a basket; which one to move.
- goal: one scene (three things, a plate, a basket, a cabinet with a drawer), ten different goals.
- long: two sub-goals in sequence, each task with its own scene.
- pretrain: not an evaluation suite but the scenes the tabletop base's vision tower learns to
  localise things in (`pi0lab.train.pretrain`, the stand-in for pi0's pretraining): "put the
  <thing> on the plate" for the ten things, with three distractors and a basket (three of these
  instructions are goal tasks too, there in the goal scene).

10 tasks per suite, 50 fixed initial states per task (1000 for pretrain). As in LIBERO, where each
task's BDDL file gives every object a small region, a task has one layout (drawn from a generator
seeded with (suite, task); the goal suite's ten tasks share one) and initial state k moves every thing
by up to LAYOUT_JITTER in x and y and YAW_JITTER in yaw from its spot there (a generator seeded with
(suite, task, k)), so it is the same on every machine. The jitter is large enough that a policy must
look (a blind replay of another initial state's expert fails most episodes), and the spatial sampler
only accepts layouts where the named relation is clear (a margin of 10 cm, 8 cm for "next to").
The pretraining scenes are scattered anywhere in REGION instead: breadth is their purpose.

A goal is ("on", thing, target): the thing rests on the target (plate top, basket floor, cube top,
cabinet top) and is not held; or ("open", "drawer", ""): the drawer is out by >= DRAWER_OPEN.
A task succeeds when all its goals hold at once.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from pi0lab.envs.tabletop.world import (
    BAR, BASKET, CABINET, CUBE, DRAWER_OPEN, DRAWER_TRAVEL, HALF_EXTENTS, PLATE, Thing, World,
)

COLORS = {
    "red": (0.86, 0.14, 0.12),
    "green": (0.14, 0.68, 0.2),
    "blue": (0.14, 0.3, 0.92),
    "yellow": (0.98, 0.85, 0.1),
    "purple": (0.62, 0.2, 0.78),
}
PLATE_COLOR = (0.96, 0.96, 0.96)
BASKET_COLOR = (0.55, 0.33, 0.12)
CABINET_COLOR = (0.5, 0.34, 0.2)
NUM_INIT_STATES = {"tabletop_spatial": 50, "tabletop_object": 50, "tabletop_goal": 50, "tabletop_long": 50,
                   "tabletop_pretrain": 1000}
MAX_EPISODE_STEPS = {"tabletop_spatial": 60, "tabletop_object": 60, "tabletop_goal": 70, "tabletop_long": 120,
                     "tabletop_pretrain": 60}
SUITE_SEEDS = {"tabletop_spatial": 11, "tabletop_object": 12, "tabletop_goal": 13, "tabletop_long": 14,
               "tabletop_pretrain": 15}
REGION = ((-0.27, 0.27), (-0.22, 0.24))  # where things are placed, x and y
CLEARANCE = 0.015  # free space between the bounding circles of two things
LAYOUT_JITTER = 0.05  # an initial state moves each thing up to this far (m) in x and in y from its layout spot ...
YAW_JITTER = 0.3  # ... and turns it up to this far (rad)
SCATTERED_SUITES = ("tabletop_pretrain",)  # suites whose scenes have no layout


@dataclass(frozen=True)
class Goal:
    kind: str  # "on" or "open"
    thing: str  # a name ("red cube"), or name@relation for spatial references ("red cube@left")
    target: str = ""


@dataclass(frozen=True)
class Task:
    instruction: str
    scene: tuple[str, ...]  # names of the things; the object suite adds its distractors per init state
    goals: tuple[Goal, ...]


def _on(thing: str, target: str) -> Goal:
    return Goal("on", thing, target)


OPEN_DRAWER = Goal("open", "drawer")

_SPATIAL_SCENE = ("red cube", "red cube", "plate", "basket")
_WHERE = {"left": "on the left", "right": "on the right", "front": "in the front", "back": "in the back",
          "near:basket": "next to the basket", "near:plate": "next to the plate"}
_SPATIAL = [("left", "plate"), ("right", "plate"), ("front", "plate"), ("back", "plate"), ("near:basket", "plate"),
            ("left", "basket"), ("right", "basket"), ("front", "basket"), ("back", "basket"), ("near:plate", "basket")]


def _placement(target: str) -> str:
    return "on the plate" if target == "plate" else "in the basket"


OBJECTS = tuple(f"{color} {kind}" for kind in (CUBE, BAR) for color in COLORS)
_GOAL_SCENE = ("red cube", "blue cube", "yellow bar", "plate", "basket", "cabinet")

SUITES: dict[str, list[Task]] = {
    "tabletop_spatial": [
        Task(f"pick up the red cube {_WHERE[rel]} and place it {_placement(dest)}", _SPATIAL_SCENE,
             (_on(f"red cube@{rel}", dest),))
        for rel, dest in _SPATIAL
    ],
    "tabletop_object": [
        Task(f"pick up the {name} and place it in the basket", (name, "basket"), (_on(name, "basket"),))
        for name in OBJECTS
    ],
    "tabletop_goal": [
        Task("open the drawer of the cabinet", _GOAL_SCENE, (OPEN_DRAWER,)),
        Task("put the red cube on the plate", _GOAL_SCENE, (_on("red cube", "plate"),)),
        Task("put the red cube in the basket", _GOAL_SCENE, (_on("red cube", "basket"),)),
        Task("put the blue cube on the plate", _GOAL_SCENE, (_on("blue cube", "plate"),)),
        Task("put the blue cube in the basket", _GOAL_SCENE, (_on("blue cube", "basket"),)),
        Task("put the yellow bar on the plate", _GOAL_SCENE, (_on("yellow bar", "plate"),)),
        Task("put the yellow bar in the basket", _GOAL_SCENE, (_on("yellow bar", "basket"),)),
        Task("stack the red cube on the blue cube", _GOAL_SCENE, (_on("red cube", "blue cube"),)),
        Task("stack the blue cube on the red cube", _GOAL_SCENE, (_on("blue cube", "red cube"),)),
        Task("put the red cube on top of the cabinet", _GOAL_SCENE, (_on("red cube", "cabinet"),)),
    ],
    "tabletop_long": [
        Task("put both the red cube and the blue cube in the basket",
             ("red cube", "blue cube", "green cube", "basket", "plate"),
             (_on("red cube", "basket"), _on("blue cube", "basket"))),
        Task("put both the yellow bar and the green cube on the plate",
             ("yellow bar", "green cube", "red cube", "plate", "basket"),
             (_on("yellow bar", "plate"), _on("green cube", "plate"))),
        Task("open the drawer and put the red cube on the plate",
             ("cabinet", "red cube", "blue cube", "plate"), (OPEN_DRAWER, _on("red cube", "plate"))),
        Task("put the blue cube on the plate and the red cube in the basket",
             ("red cube", "blue cube", "yellow cube", "plate", "basket"),
             (_on("blue cube", "plate"), _on("red cube", "basket"))),
        Task("stack the green cube on the red cube and put the yellow bar in the basket",
             ("green cube", "red cube", "yellow bar", "basket"),
             (_on("green cube", "red cube"), _on("yellow bar", "basket"))),
        Task("open the drawer and put the yellow bar on top of the cabinet",
             ("cabinet", "yellow bar", "green cube"), (OPEN_DRAWER, _on("yellow bar", "cabinet"))),
        Task("put the purple cube in the basket and stack the red cube on the blue cube",
             ("purple cube", "red cube", "blue cube", "basket"),
             (_on("purple cube", "basket"), _on("red cube", "blue cube"))),
        Task("put the red bar on the plate and the green cube in the basket",
             ("red bar", "green cube", "blue cube", "plate", "basket"),
             (_on("red bar", "plate"), _on("green cube", "basket"))),
        Task("open the drawer and put the blue cube in the basket",
             ("cabinet", "blue cube", "red cube", "basket"), (OPEN_DRAWER, _on("blue cube", "basket"))),
        Task("stack the yellow cube on the blue cube and the red cube on the yellow cube",
             ("yellow cube", "blue cube", "red cube", "plate"),
             (_on("yellow cube", "blue cube"), _on("red cube", "yellow cube"))),
    ],
    "tabletop_pretrain": [
        Task(f"put the {name} on the plate", (name, "plate", "basket"), (_on(name, "plate"),)) for name in OBJECTS
    ],
}


def check_suite(suite: str) -> list[Task]:
    if suite not in SUITES:
        raise ValueError(f"unknown tabletop suite {suite!r}; valid: {', '.join(SUITES)}")
    return SUITES[suite]


# ---- scenes ---------------------------------------------------------------------------------------
def _make_thing(name: str, pos, yaw: float) -> Thing:
    if name == "plate":
        return Thing(name, PLATE, PLATE_COLOR, np.asarray(pos, float), yaw)
    if name == "basket":
        return Thing(name, BASKET, BASKET_COLOR, np.asarray(pos, float), yaw)
    if name == "cabinet":
        return Thing(name, CABINET, CABINET_COLOR, np.asarray(pos, float), yaw)
    color, kind = name.split(" ")
    return Thing(name, kind, COLORS[color], np.asarray(pos, float), yaw)


def _kind(name: str) -> str:
    return name if name in (PLATE, BASKET, CABINET) else name.split(" ")[1]


def _radius(name: str) -> float:
    hx, hy, _ = HALF_EXTENTS[_kind(name)]
    return math.hypot(hx, hy)


def _place(names: list[str], rng: np.random.Generator, layout: list[Thing] | None = None) -> list[Thing]:
    """Random non-overlapping placement (rejection sampling, largest first; a crowded layout is
    started over). A cabinet stands at the back, left or right, and the strip its drawer slides
    into stays free. With a `layout` (one Thing per name, in order) each thing is drawn near its spot
    there (cabinets stay put) instead of anywhere in REGION."""
    for _ in range(100):
        things = _try_place(names, rng, layout)
        if things is not None:
            return [things[i] for i in range(len(names))]
    raise RuntimeError(f"could not place {names} without overlaps")


def _try_place(names: list[str], rng: np.random.Generator, layout: list[Thing] | None) -> dict[int, Thing] | None:
    things, keep_out = {}, []
    for i in sorted(range(len(names)), key=lambda i: -_radius(names[i])):
        name, kind = names[i], _kind(names[i])
        if kind == CABINET:
            hx, hy, hz = HALF_EXTENTS[CABINET]
            if layout is None:
                x, y = rng.choice([-1, 1]) * rng.uniform(0.12, 0.18), rng.uniform(0.24, 0.27)
            else:
                x, y = layout[i].pos[0], layout[i].pos[1]
            things[i] = _make_thing(name, (x, y, hz), 0.0)
            keep_out.append((x - hx - 0.03, x + hx + 0.03, y - hy - DRAWER_TRAVEL - 0.05, y + hy))
            continue
        if layout is not None:
            yaw = layout[i].yaw + (rng.uniform(-YAW_JITTER, YAW_JITTER) if kind in (CUBE, BAR) else 0.0)
        else:
            yaw = rng.uniform(-math.pi / 2, math.pi / 2) if kind == BAR else (rng.uniform(-0.6, 0.6) if kind == CUBE else 0.0)
        radius = _radius(name)
        for _ in range(200):
            if layout is None:
                x, y = rng.uniform(*REGION[0]), rng.uniform(*REGION[1])
            else:
                x, y = (np.clip(layout[i].pos[a] + rng.uniform(-LAYOUT_JITTER, LAYOUT_JITTER), *REGION[a]) for a in (0, 1))
            clear_of_things = all(
                math.hypot(x - t.pos[0], y - t.pos[1]) >= radius + _radius(t.name) + CLEARANCE
                for t in things.values() if t.kind != CABINET
            )
            clear_of_zones = all(
                not (x0 - radius < x < x1 + radius and y0 - radius < y < y1 + radius) for x0, x1, y0, y1 in keep_out
            )
            if clear_of_things and clear_of_zones:
                things[i] = _make_thing(name, (x, y, HALF_EXTENTS[kind][2]), yaw)
                break
        else:
            return None
    return things


def scene_names(suite: str, task_id: int, rng: np.random.Generator) -> list[str]:
    """The things of one initial scene; the object and pretrain suites add three distractors to the target."""
    names = list(check_suite(suite)[task_id].scene)
    if suite in ("tabletop_object", "tabletop_pretrain"):
        others = [o for o in OBJECTS if o != names[0]]
        names[1:1] = [others[i] for i in rng.choice(len(others), size=3, replace=False)]
    return names


@functools.cache
def task_layout(suite: str, task_id: int) -> tuple[Thing, ...]:
    """A task's layout: the spot of each thing, around which its initial states are drawn (one
    layout for all tasks of the goal suite). Read-only: worlds get their own Things."""
    tasks = check_suite(suite)
    rng = np.random.default_rng([SUITE_SEEDS[suite], 0 if suite == "tabletop_goal" else task_id])
    names = scene_names(suite, task_id, rng)
    while True:
        things = _place(names, rng)
        if all(_is_clear(World(things), g) for g in tasks[task_id].goals):
            return tuple(things)


def make_world(suite: str, task_id: int, init_state_id: int) -> World:
    """Initial world `init_state_id` of a task (deterministic)."""
    tasks = check_suite(suite)
    if not 0 <= task_id < len(tasks):
        raise ValueError(f"task id {task_id} out of range: {suite} has tasks 0..{len(tasks) - 1}")
    if not 0 <= init_state_id < NUM_INIT_STATES[suite]:
        raise ValueError(f"init state id {init_state_id} out of range: 0..{NUM_INIT_STATES[suite] - 1}")
    rng = np.random.default_rng([SUITE_SEEDS[suite], task_id, init_state_id])
    if suite in SCATTERED_SUITES:
        layout, names = None, scene_names(suite, task_id, rng)
    else:
        layout = list(task_layout(suite, task_id))
        names = [t.name for t in layout]
    while True:
        world = World(_place(names, rng, layout))
        if all(_is_clear(world, g) for g in tasks[task_id].goals):
            return world


# ---- references and goals -------------------------------------------------------------------------
_MARGIN = {"left": 0.1, "right": 0.1, "front": 0.1, "back": 0.1, "near": 0.08}


def _relation_scores(world: World, name: str, relation: str) -> tuple[list[int], list[float]]:
    """Candidates named `name` and a score per candidate; the referent has the lowest score."""
    candidates = [i for i, t in enumerate(world.things) if t.name == name]
    pos = [world.things[i].pos for i in candidates]
    if relation.startswith("near:"):
        anchor = resolve(world, relation.split(":")[1])
        scores = [math.hypot(p[0] - world.things[anchor].pos[0], p[1] - world.things[anchor].pos[1]) for p in pos]
    else:
        axis, sign = {"left": (0, 1), "right": (0, -1), "front": (1, 1), "back": (1, -1)}[relation]
        scores = [sign * p[axis] for p in pos]
    return candidates, scores


def _is_clear(world: World, goal: Goal) -> bool:
    """Spatial references need a clear winner; plain names are always clear."""
    if "@" not in goal.thing:
        return True
    name, relation = goal.thing.split("@")
    _, scores = _relation_scores(world, name, relation)
    best, second = sorted(scores)[:2]
    return second - best >= _MARGIN[relation.split(":")[0]]


def resolve(world: World, reference: str) -> int:
    """Index of the thing a reference names ("plate", "red cube@left"); KeyError if absent."""
    if "@" in reference:
        name, relation = reference.split("@")
        candidates, scores = _relation_scores(world, name, relation)
        if not candidates:
            raise KeyError(f"no {name} in the scene")
        return candidates[int(np.argmin(scores))]
    matches = [i for i, t in enumerate(world.things) if t.name == reference]
    if len(matches) != 1:
        raise KeyError(f"{reference!r} names {len(matches)} things in the scene")
    return matches[0]


@dataclass(frozen=True)
class Resolved:
    """A goal with its references turned into thing indices (fixed at reset: a spatial reference
    means the thing that was there at the start)."""

    kind: str
    thing: int
    target: int


def resolve_goals(world: World, goals) -> tuple[Resolved, ...]:
    return tuple(
        Resolved("open", resolve(world, "cabinet"), -1) if g.kind == "open" else Resolved("on", resolve(world, g.thing), resolve(world, g.target))
        for g in goals
    )


# ---- the privileged-state control ------------------------------------------------------------------
POSE_DIMS = 4  # x, y, z, yaw of each thing (yaw always, also for things that never turn: plate, basket, cabinet)


@functools.cache
def max_things(suite: str) -> int:
    """The most things any scene of the suite holds (the object and pretrain suites count their distractors)."""
    return max(len(scene_names(suite, t, np.random.default_rng(0))) for t in range(len(check_suite(suite))))


def privileged_state_dim(suite: str, robot_dims: int = 8) -> int:
    """Width of a privileged state: the robot's `robot_dims` + POSE_DIMS per thing of the fullest scene.

    spatial 8 + 4*4 = 24, object 8 + 5*4 = 28, goal 8 + 6*4 = 32, long 8 + 5*4 = 28, pretrain 8 + 6*4 = 32.
    """
    return robot_dims + POSE_DIMS * max_things(suite)


def thing_poses(world: World, num_things: int) -> np.ndarray:
    """float32 [POSE_DIMS * num_things]: (x, y, z, yaw) of every thing in `world.things` order, zeros after
    the scene's last thing. That order is the task's layout order (`task_layout`), the same for every
    initial state of a task; in the pretrain suite (no layout) the slots are (target, 3 distractors,
    plate, basket), the distractors' identity varying with the initial state. Yaw is the thing's raw
    yaw in radians (a cube looks the same every quarter turn, a bar every half turn). The drawer's
    extent is not in it: it is no thing's pose (the images show it)."""
    if len(world.things) > num_things:
        raise ValueError(f"the scene has {len(world.things)} things but the privileged state has room for {num_things}")
    poses = np.zeros((num_things, POSE_DIMS), np.float32)
    for i, thing in enumerate(world.things):
        poses[i] = (*thing.pos, thing.yaw)
    return poses.reshape(-1)


def holds(world: World, goal: Resolved) -> bool:
    if goal.kind == "open":
        return world.drawer >= DRAWER_OPEN
    return world.support[goal.thing] == goal.target and world.held != goal.thing
