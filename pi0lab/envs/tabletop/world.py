"""The kinematic tabletop world: boxes on a table, a parallel gripper, a cabinet with a drawer.

Frame: metres, z up, the table top is z = 0; the main camera looks from -y (the front) towards +y,
so "left" is -x and "front" is -y. Every thing is a box with half extents (hx, hy, hz) turned by a
yaw about z.

The gripper points down. Its point `eef` is between the fingertips; the fingers close along the
gripper's local x axis (cos yaw, sin yaw, 0). One step of the 7-D action a in [-1, 1]:

    eef   += POS_STEP * a[0:3]                  (clipped to the workspace)
    yaw   += YAW_STEP * a[5]                    (clipped to [-pi/2, pi/2]; a[3], a[4] are ignored:
                                                 the gripper always points down)
    a[6] > 0: fingers close by GAP_STEP; a thing whose width across the fingers lies between the
              old and the new gap, sitting between the fingertips, is grasped (fingers stop on it)
    a[6] <= 0: fingers open by GAP_STEP; a held thing is released and drops straight down onto
              whatever is highest under its centre (the table, a plate, the basket floor, a cube...)

An elongated bar only fits between the open fingers (gap 0.09) when the fingers close across it:
its width along the closing axis, 2 (|u.a_x| hx + |u.a_y| hy), must be <= the gap. The drawer is
moved by grasping its handle: while held, only the y motion acts, and it slides the drawer.
The world is kinematic: nothing collides (the hand and carried things pass through others), and
only the top thing of a stack can be grasped.

State (LIBERO's 8-D convention): eef position, eef orientation as axis-angle, finger positions.
Gripper orientation R = Rz(yaw) Rx(pi) is a half turn about (cos(yaw/2), sin(yaw/2), 0), so the
axis-angle is pi * (cos(yaw/2), sin(yaw/2), 0); finger qpos = (+gap/2, -gap/2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

POS_STEP = 0.05  # metres per unit action
YAW_STEP = 0.25  # radians per unit action
GAP_STEP = 0.035  # finger gap change per step (fully open -> closed in 3 steps)
MAX_GAP = 0.09
WORKSPACE_LOW = np.array([-0.32, -0.30, 0.0])
WORKSPACE_HIGH = np.array([0.32, 0.36, 0.30])
START_EEF = (0.0, 0.08, 0.28)  # high over the back: the main view sees the table unobstructed

# thing kinds
CUBE, BAR, PLATE, BASKET, CABINET = "cube", "bar", "plate", "basket", "cabinet"
GRASPABLE = (CUBE, BAR)
HALF_EXTENTS = {
    CUBE: (0.03, 0.03, 0.03),
    BAR: (0.08, 0.025, 0.025),
    PLATE: (0.08, 0.08, 0.01),
    BASKET: (0.085, 0.085, 0.04),
    CABINET: (0.11, 0.09, 0.08),
}
BASKET_FLOOR = 0.01  # height of the basket's inner floor above its bottom
DRAWER_TRAVEL = 0.12  # how far the drawer slides out
DRAWER_OPEN = 0.10  # "open" once slid out this far
DRAWER_HALF = (0.09, 0.08, 0.045)  # the drawer box
DRAWER_Z = 0.07  # drawer (and handle) centre height
HANDLE_HALF = (0.05, 0.01, 0.01)
HANDLE_OFFSET = 0.015  # handle centre in front of the drawer front

TABLE = -1  # support id of the table
HELD = -2  # support id of the held thing
HANDLE = -3  # `held` id when the drawer handle is held
NOTHING = -1  # `held` id when the hand is empty


@dataclass
class Thing:
    name: str
    kind: str
    color: tuple[float, float, float]
    pos: np.ndarray  # centre [3]
    yaw: float = 0.0

    @property
    def half(self) -> tuple[float, float, float]:
        return HALF_EXTENTS[self.kind]


@dataclass
class World:
    """One tabletop scene. `things` never changes order: indices name things everywhere."""

    things: list[Thing]
    eef: np.ndarray = field(default_factory=lambda: np.array(START_EEF))
    yaw: float = 0.0
    gap: float = MAX_GAP
    held: int = NOTHING
    held_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # thing centre - eef, gripper frame
    held_yaw: float = 0.0  # thing yaw - gripper yaw
    drawer: float = 0.0  # how far the drawer is out, [0, DRAWER_TRAVEL]
    support: list[int] = field(default_factory=list)  # what each thing rests on

    def __post_init__(self):
        if not self.support:
            self.support = [TABLE] * len(self.things)
            for i in self._drop_order():
                self._settle(i)

    def copy(self) -> "World":
        return World(
            things=[Thing(t.name, t.kind, t.color, t.pos.copy(), t.yaw) for t in self.things],
            eef=self.eef.copy(), yaw=self.yaw, gap=self.gap, held=self.held,
            held_offset=self.held_offset.copy(), held_yaw=self.held_yaw, drawer=self.drawer,
            support=list(self.support),
        )

    # ---- geometry -----------------------------------------------------------------------------
    def cabinet(self) -> int | None:
        return next((i for i, t in enumerate(self.things) if t.kind == CABINET), None)

    def handle_pos(self) -> np.ndarray:
        """Centre of the drawer handle [3] (the scene must have a cabinet)."""
        cab = self.things[self.cabinet()]
        front = cab.pos[1] - cab.half[1] - self.drawer
        return np.array([cab.pos[0], front - HANDLE_OFFSET, DRAWER_Z])

    def top(self, i: int) -> float:
        """Height of the surface a thing offers to things dropped on it."""
        t = self.things[i]
        if t.kind == BASKET:
            return t.pos[2] - t.half[2] + BASKET_FLOOR
        return t.pos[2] + t.half[2]

    def covers(self, i: int, x: float, y: float) -> bool:
        """Is the point (x, y) over thing i's footprint?"""
        t = self.things[i]
        c, s = math.cos(t.yaw), math.sin(t.yaw)
        dx, dy = x - t.pos[0], y - t.pos[1]
        return abs(c * dx + s * dy) <= t.half[0] and abs(-s * dx + c * dy) <= t.half[1]

    def width_across(self, i: int, yaw: float) -> float:
        """Width of thing i along the closing axis of a gripper at `yaw`: 2 (|u.a_x| hx + |u.a_y| hy)."""
        t = self.things[i]
        rel = yaw - t.yaw
        return 2 * (abs(math.cos(rel)) * t.half[0] + abs(math.sin(rel)) * t.half[1])

    def state(self) -> np.ndarray:
        """LIBERO-style proprioception [8]: eef pos, axis-angle pi (cos(yaw/2), sin(yaw/2), 0), finger qpos."""
        half = self.yaw / 2
        return np.array(
            [*self.eef, math.pi * math.cos(half), math.pi * math.sin(half), 0.0, self.gap / 2, -self.gap / 2],
            dtype=np.float32,
        )

    # ---- dynamics -----------------------------------------------------------------------------
    def step(self, action: np.ndarray) -> None:
        """Apply one 7-D action in [-1, 1] (see the module docstring)."""
        if self.held == HANDLE:
            self._slide_drawer(POS_STEP * action[1])
        else:
            self.eef = np.clip(self.eef + POS_STEP * action[:3], WORKSPACE_LOW, WORKSPACE_HIGH)
            self.yaw = min(max(self.yaw + YAW_STEP * action[5], -math.pi / 2), math.pi / 2)
        if action[6] > 0:
            self._close()
        else:
            self._open()
        if self.held >= 0:
            self._carry()

    def _slide_drawer(self, dy: float) -> None:
        """Pulling the handle (dy < 0) slides the drawer out; the hand stays on the handle."""
        self.drawer = min(max(self.drawer - dy, 0.0), DRAWER_TRAVEL)
        self.eef = self.handle_pos()

    def _close(self) -> None:
        if self.held != NOTHING:
            return
        old_gap, self.gap = self.gap, max(self.gap - GAP_STEP, 0.0)
        for i in self._graspable():
            width = self.width_across(i, self.yaw)
            if self.gap <= width <= old_gap and self._between_fingers(self.things[i].pos, self.things[i].half):
                return self._grasp(i, width)
        if self.cabinet() is not None:
            width = 2 * HANDLE_HALF[1] * abs(math.sin(self.yaw)) + 2 * HANDLE_HALF[0] * abs(math.cos(self.yaw))
            if self.gap <= width <= old_gap and self._between_fingers(self.handle_pos(), HANDLE_HALF):
                self.held, self.gap = HANDLE, width
                self.eef = self.handle_pos()

    def _graspable(self) -> list[int]:
        """Cubes and bars with nothing resting on them."""
        below = set(self.support)
        return [i for i, t in enumerate(self.things) if t.kind in GRASPABLE and i not in below]

    def _between_fingers(self, centre: np.ndarray, half) -> bool:
        """The thing's centre is within 3 cm of the closing line, the fingertips overlap it sideways,
        and the fingertips are between its bottom (2 cm slack) and 1 cm below its top."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        dx, dy = centre[0] - self.eef[0], centre[1] - self.eef[1]
        along, across = c * dx + s * dy, -s * dx + c * dy
        reach = min(half[0], half[1]) + 0.005
        return (
            abs(along) <= 0.03
            and abs(across) <= reach
            and centre[2] - half[2] - 0.02 <= self.eef[2] <= centre[2] + half[2] - 0.01
        )

    def _grasp(self, i: int, width: float) -> None:
        """Fingers stop on the thing; it is centred between them and from now on moves with the hand."""
        t = self.things[i]
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        dx, dy = t.pos[0] - self.eef[0], t.pos[1] - self.eef[1]
        across = -s * dx + c * dy
        self.held, self.gap = i, width
        self.held_offset = np.array([0.0, across, t.pos[2] - self.eef[2]])
        self.held_yaw = t.yaw - self.yaw
        self.support[i] = HELD
        self._carry()

    def _carry(self) -> None:
        t = self.things[self.held]
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        ox, oy, oz = self.held_offset
        t.pos = np.array([self.eef[0] + c * ox - s * oy, self.eef[1] + s * ox + c * oy, self.eef[2] + oz])
        t.yaw = self.yaw + self.held_yaw

    def _open(self) -> None:
        if self.held >= 0:
            self.support[self.held] = TABLE
            self._settle(self.held)
        self.held = NOTHING
        self.gap = min(self.gap + GAP_STEP, MAX_GAP)

    def _settle(self, i: int) -> None:
        """Drop thing i straight down onto the highest surface under its centre."""
        t = self.things[i]
        x, y = t.pos[0], t.pos[1]
        best, height = TABLE, 0.0
        for j in range(len(self.things)):
            if j != i and self.support[j] != HELD and self.covers(j, x, y):
                top = self.top(j)
                if top > height and top <= t.pos[2]:
                    best, height = j, top
        self.support[i] = best
        t.pos = np.array([x, y, height + t.half[2]])

    def _drop_order(self) -> list[int]:
        """Initial settling order: lowest first, so things stacked in a scene land on their base."""
        return sorted(range(len(self.things)), key=lambda i: self.things[i].pos[2])
