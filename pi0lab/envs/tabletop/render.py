"""Numpy ray casting of oriented boxes: two cameras, Lambert shading, vertical shadows, a tiled table.

For each pixel a ray o + t d leaves the camera. A box (centre c, half extents h, yaw) is hit where
the ray, turned into the box frame (o' = Rz(-yaw)(o - c), d' = Rz(-yaw) d), is inside all three slabs:

    t_near = max_a min((-h_a - o'_a) / d'_a, (h_a - o'_a) / d'_a)
    t_far  = min_a max((-h_a - o'_a) / d'_a, (h_a - o'_a) / d'_a)        hit iff t_near <= t_far, t_near > 0

The visible face is the slab that gave t_near, with normal +e_a when d'_a < 0. Open-top boxes (basket,
drawer) entered through the top show their inside: the inner floor (a plane `floor` above the bottom)
or else the far wall at t_far, with the same normal rule (which now points inwards). Each box tests
only the pixels inside its projected bounding rectangle; the (box, pixel) pairs of all frames (N
worlds x 2 cameras) are cast in one batched pass, and a scatter-min over a depth buffer
(np.minimum.at) keeps the nearest hit per pixel, so occlusion is exact.

Shading: colour * (AMBIENT + DIFFUSE * max(0, n . L)). Shadows fall straight down: a point lies in
the shadow of a caster (the gripper, a held thing) when it is below the caster and inside its footprint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from pi0lab.envs.tabletop.world import (
    BASKET, BASKET_FLOOR, CABINET, DRAWER_HALF, DRAWER_Z, HANDLE_HALF, MAX_GAP, World,
)

LIGHT = np.array([0.3, -0.4, 1.0]) / np.linalg.norm([0.3, -0.4, 1.0])
AMBIENT, DIFFUSE = 0.35, 0.65
SHADOW = 0.55  # brightness factor in shadow
INSIDE = 0.7  # brightness factor of an open box's inside
TABLE_HALF = (0.5, 0.5)  # table extent in x, y around the origin
TABLE_COLORS = (np.array([0.66, 0.64, 0.6]), np.array([0.6, 0.58, 0.54]))  # 10 cm tiles
BACKGROUND = (np.array([0.28, 0.3, 0.34]), np.array([0.16, 0.17, 0.2]))  # top, bottom of the image
GRIPPER_COLOR = (0.22, 0.22, 0.25)
FINGER_COLOR = (0.4, 0.4, 0.44)
DRAWER_COLOR = (0.86, 0.7, 0.46)  # light wood: an open drawer stands out from the cabinet
HANDLE_COLOR = (0.2, 0.2, 0.2)
MAIN_EYE, MAIN_TARGET, MAIN_FOV = (0.0, -0.52, 0.6), (0.0, 0.05, 0.0), 48.0
WRIST_HEIGHT, WRIST_FOV = 0.16, 75.0  # above the palm, which the wrist view leaves out


@dataclass
class Boxes:
    """K boxes: centre [K,3], half extents [K,3], yaw [K], colour [K,3], floor [K] (0: a closed box;
    > 0: an open-top box whose inner floor is this thick)."""

    centre: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    color: np.ndarray
    floor: np.ndarray


@dataclass
class Camera:
    """Pinhole camera: eye [3] and an orthonormal (right, up, forward) basis; fov across the image."""

    eye: np.ndarray
    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray
    fov_deg: float


def look_at(eye, target, fov_deg: float) -> Camera:
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return Camera(eye, right, np.cross(right, forward), forward, fov_deg)


MAIN_CAMERA = look_at(MAIN_EYE, MAIN_TARGET, MAIN_FOV)


def wrist_camera(world: World) -> Camera:
    """Looks straight down from above the palm; image right = the closing axis."""
    c, s = math.cos(world.yaw), math.sin(world.yaw)
    eye = world.eef + np.array([0.0, 0.0, WRIST_HEIGHT])
    return Camera(eye, np.array([c, s, 0.0]), np.array([-s, c, 0.0]), np.array([0.0, 0.0, -1.0]), WRIST_FOV)


def _boxes(rows) -> Boxes:
    centre, half, yaw, color, floor = zip(*rows)
    return Boxes(np.array(centre, float), np.array(half, float), np.array(yaw, float),
                 np.array(color, np.float32), np.array(floor, float))


def scene_boxes(world: World, with_hand: bool) -> tuple[Boxes, Boxes]:
    """The boxes to draw (things, drawer, handle, fingers; palm and arm only `with_hand`) and the
    shadow casters (the palm, whose footprint covers the fingers, and a held thing)."""
    rows = []  # (centre, half, yaw, colour, floor)
    for t in world.things:
        rows.append((t.pos, t.half, t.yaw, t.color, BASKET_FLOOR if t.kind == BASKET else 0.0))
        if t.kind == CABINET:
            front = t.pos[1] - t.half[1] - world.drawer
            drawer_centre = (t.pos[0], front - 0.004 + DRAWER_HALF[1], DRAWER_Z)  # front sticks out 4 mm
            rows.append((drawer_centre, DRAWER_HALF, 0.0, DRAWER_COLOR, BASKET_FLOOR))
            rows.append((world.handle_pos(), HANDLE_HALF, 0.0, HANDLE_COLOR, 0.0))
    c, s = math.cos(world.yaw), math.sin(world.yaw)
    x, y, z = world.eef
    for side in (-1.0, 1.0):
        offset = side * (world.gap / 2 + 0.007)
        rows.append(((x + c * offset, y + s * offset, z + 0.035), (0.007, 0.012, 0.035), world.yaw, FINGER_COLOR, 0.0))
    palm = ((x, y, z + 0.085), (MAX_GAP / 2 + 0.015, 0.02, 0.015), world.yaw, GRIPPER_COLOR, 0.0)
    if with_hand:
        rows.append(palm)
        rows.append(((x, y, z + 0.3), (0.015, 0.015, 0.2), world.yaw, GRIPPER_COLOR, 0.0))
    casters = [palm]
    if world.held >= 0:
        t = world.things[world.held]
        casters.append((t.pos, t.half, t.yaw, t.color, 0.0))
    return _boxes(rows), _boxes(casters)


_CORNERS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float32)


def _face_shades(yaw: np.ndarray) -> np.ndarray:
    """Lambert brightness of each box's 6 faces [B,6], indexed 2 * axis + (normal is +e_axis)."""
    c, s, zero, one = np.cos(yaw), np.sin(yaw), np.zeros_like(yaw), np.ones_like(yaw)
    axes = np.stack([np.stack([c, s, zero], -1), np.stack([-s, c, zero], -1), np.stack([zero, zero, one], -1)], 1)
    normals = np.stack([-axes, axes], 2).reshape(len(yaw), 6, 3)
    return (AMBIENT + DIFFUSE * np.clip(normals @ LIGHT, 0, None)).astype(np.float32)


def _to_box(c, s, x, y, z):
    """Rotate world vectors into box frames: R^T v with R = Rz(yaw) (c = cos yaw, s = sin yaw)."""
    return c * x + s * y, -s * x + c * y, z


@lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image-plane coordinates of the pixel centres, row-major, for a unit half field of view: u, v [S*S]."""
    centres = ((np.arange(size) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    u = np.tile(centres, size)
    v = np.repeat(-centres, size)
    return u, v


@dataclass
class _Cameras:
    """F cameras as arrays: eye, right, up, forward [F,3], tan of the half field of view [F]."""

    eye: np.ndarray
    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray
    tan: np.ndarray

    @classmethod
    def of(cls, cams: list[Camera]) -> "_Cameras":
        arrays = [np.array([getattr(c, k) for c in cams], np.float32) for k in ("eye", "right", "up", "forward")]
        tan = np.array([math.tan(math.radians(c.fov_deg) / 2) for c in cams], np.float32)
        return cls(*arrays, tan)

    def rays(self, frames: np.ndarray, size: int) -> np.ndarray:
        """Directions [F,S*S,3] of the rays through every pixel centre of each frame: forward + u right + v up."""
        u, v = _pixel_grid(size)
        tan = self.tan[frames][:, None, None]
        return (self.forward[frames][:, None] + tan * (u[None, :, None] * self.right[frames][:, None]
                                                        + v[None, :, None] * self.up[frames][:, None]))

    def rects(self, frame: np.ndarray, centre, half, yaw, size: int) -> tuple[np.ndarray, ...]:
        """Pixel rectangle [i0, i1) x [j0, j1) covering each box (the whole image if a corner is behind
        the eye) -> four int arrays [B]."""
        c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        local = _CORNERS[None] * half[:, None]  # [B,8,3]
        corners = np.stack([c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1], local[..., 2]], -1)
        q = corners + centre[:, None] - self.eye[frame][:, None]
        depth = (q * self.forward[frame][:, None]).sum(-1)
        scale = 1.0 / (np.maximum(depth, 1e-4) * self.tan[frame][:, None])
        j = ((q * self.right[frame][:, None]).sum(-1) * scale + 1) / 2 * size - 0.5
        i = (1 - (q * self.up[frame][:, None]).sum(-1) * scale) / 2 * size - 0.5
        behind = (depth <= 1e-4).any(1)
        i0 = np.where(behind, 0, np.clip(np.floor(i.min(1)), 0, size)).astype(np.int64)
        i1 = np.where(behind, size, np.clip(np.ceil(i.max(1)) + 1, 0, size)).astype(np.int64)
        j0 = np.where(behind, 0, np.clip(np.floor(j.min(1)), 0, size)).astype(np.int64)
        j1 = np.where(behind, size, np.clip(np.ceil(j.max(1)) + 1, 0, size)).astype(np.int64)
        return i0, np.maximum(i1, i0), j0, np.maximum(j1, j0)


def _pixels_of_rects(i0, i1, j0, j1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (box, row, col) with (row, col) inside box b's rectangle -> three int arrays [L]."""
    width = j1 - j0
    area = (i1 - i0) * width
    box = np.repeat(np.arange(len(area)), area)
    r = np.arange(box.size) - np.repeat(np.cumsum(area) - area, area)
    w = width[box]
    return box, i0[box] + r // w, j0[box] + r % w


def _background(eye: np.ndarray, rays: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth [F,S*S] and colour [F,S*S,3] of the tiled table (z = 0) and the backdrop behind it,
    for eyes [F,3] and rays [F,S*S,3]."""
    dz = rays[..., 2]
    with np.errstate(divide="ignore"):
        t = np.where(dz < 0, -eye[:, 2:3] / dz, np.inf)
    with np.errstate(invalid="ignore"):
        x, y = eye[:, 0:1] + t * rays[..., 0], eye[:, 1:2] + t * rays[..., 1]
    on_table = np.isfinite(t) & (np.abs(x) <= TABLE_HALF[0]) & (np.abs(y) <= TABLE_HALF[1])
    tile = (np.floor(np.where(on_table, x, 0) * 10) + np.floor(np.where(on_table, y, 0) * 10)) % 2 == 1  # 10 cm tiles
    table = np.where(tile[..., None], TABLE_COLORS[1], TABLE_COLORS[0]) * (AMBIENT + DIFFUSE * LIGHT[2])
    ramp = np.repeat(np.linspace(0, 1, size), size)[None, :, None]
    backdrop = BACKGROUND[0] * (1 - ramp) + BACKGROUND[1] * ramp
    color = np.where(on_table[..., None], table, backdrop).astype(np.float32)
    return np.where(on_table, t, np.inf).astype(np.float32), color


@lru_cache(maxsize=8)
def _main_view(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The main camera's rays [S*S,3], background depth [S*S] and colour [S*S,3] (fixed: computed once)."""
    cams = _Cameras.of([MAIN_CAMERA])
    rays = cams.rays(np.zeros(1, np.int64), size)
    depth, color = _background(cams.eye, rays, size)
    return rays[0], depth[0], color[0]


def _concat(boxes: list[Boxes]) -> tuple[Boxes, np.ndarray]:
    """All frames' boxes in one Boxes, plus the frame of each box [B]."""
    frame = np.repeat(np.arange(len(boxes)), [len(b.yaw) for b in boxes])
    return Boxes(*(np.concatenate([getattr(b, k) for b in boxes]) for k in ("centre", "half", "yaw", "color", "floor"))), frame


def _cast(cams: _Cameras, rays, boxes: Boxes, frame_of_box: np.ndarray, depth, color, size: int) -> None:
    """Ray-cast every box of every frame into the flat rays [F*S*S,3], depth [F*S*S] and colour
    [F*S*S,3] buffers."""
    centre, half, floor = boxes.centre.astype(np.float32), boxes.half.astype(np.float32), boxes.floor.astype(np.float32)
    box, row, col = _pixels_of_rects(*cams.rects(frame_of_box, centre, half, boxes.yaw, size))
    frame = frame_of_box[box]
    pixel = frame * (size * size) + row * size + col
    d_world = rays[pixel]
    c, s = np.cos(boxes.yaw).astype(np.float32), np.sin(boxes.yaw).astype(np.float32)
    rel = cams.eye[frame_of_box] - centre
    eye_box = np.stack(_to_box(c, s, rel[:, 0], rel[:, 1], rel[:, 2]), 1)  # [B,3]
    low, high = -half - eye_box, half - eye_box  # slab planes relative to the eye, box frame [B,3]
    d = _to_box(c[box], s[box], d_world[:, 0], d_world[:, 1], d_world[:, 2])  # 3 arrays [L]
    near, far = [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in range(3):
            inv = 1.0 / d[a]
            ta, tb = low[box, a] * inv, high[box, a] * inv
            near.append(np.minimum(ta, tb))
            far.append(np.maximum(ta, tb))
        t_near = np.maximum(np.maximum(near[0], near[1]), near[2])
        t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
    hits = np.flatnonzero((t_near <= t_far) & (t_near > 0))
    box, pixel, t_hit, t_far = box[hits], pixel[hits], t_near[hits], t_far[hits]
    near, far, d = [x[hits] for x in near], [x[hits] for x in far], [x[hits] for x in d]
    axis = np.where(t_hit == near[0], 0, np.where(t_hit == near[1], 1, 2))
    # open-top boxes entered through the top show their inside: the floor, else the far wall
    through_top = (floor[box] > 0) & (axis == 2) & (d[2] < 0)
    inside = np.flatnonzero(through_top)
    if inside.size:
        b, t_out = box[inside], t_far[inside]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_floor = (floor[b] + low[b, 2]) / d[2][inside]
        exit_axis = np.where(t_out == far[0][inside], 0, np.where(t_out == far[1][inside], 1, 2))
        on_floor = t_floor < t_out
        t_hit[inside] = np.where(on_floor, t_floor, t_out)
        axis[inside] = np.where(on_floor, 2, exit_axis)
    np.minimum.at(depth, pixel, t_hit)
    win = np.flatnonzero(t_hit <= depth[pixel])
    axis_w = axis[win]
    along = np.where(axis_w == 0, d[0][win], np.where(axis_w == 1, d[1][win], d[2][win]))
    shade = _face_shades(boxes.yaw)[box[win], 2 * axis_w + (along < 0)]  # the face normal is +e_axis when d < 0
    shade = shade * np.where(through_top[win], INSIDE, 1.0).astype(np.float32)
    color[pixel[win]] = boxes.color[box[win]] * shade[:, None]


def _shade_shadows(cams: _Cameras, rays, casters: Boxes, frame_of_caster: np.ndarray, depth, color, size: int) -> None:
    """Darken visible points straight below a caster's footprint (light from straight above)."""
    bottom = (casters.centre[:, 2] - casters.half[:, 2]).astype(np.float32)
    column_centre = np.concatenate([casters.centre[:, :2], bottom[:, None] / 2], 1).astype(np.float32)
    column_half = np.concatenate([casters.half[:, :2], bottom[:, None] / 2], 1).astype(np.float32)
    box, row, col = _pixels_of_rects(*cams.rects(frame_of_caster, column_centre, column_half, casters.yaw, size))
    frame = frame_of_caster[box]
    pixel = frame * (size * size) + row * size + col
    t = depth[pixel]
    finite = np.isfinite(t)
    points = cams.eye[frame] + np.where(finite, t, 0.0)[:, None] * rays[pixel]
    rel = points - casters.centre[box]
    c, s = np.cos(casters.yaw)[box], np.sin(casters.yaw)[box]
    x, y, _ = _to_box(c, s, rel[:, 0], rel[:, 1], rel[:, 2])
    inside = (np.abs(x) <= casters.half[box, 0]) & (np.abs(y) <= casters.half[box, 1])
    shadowed = np.zeros(len(depth), bool)
    shadowed[pixel[finite & inside & (points[:, 2] < bottom[box] - 1e-3)]] = True
    color[shadowed] *= SHADOW


FRAME_BATCH_PIXELS = 1 << 17  # render this many pixels' worth of frames per pass (bounds memory)


def render_worlds(worlds: list[World], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Both cameras of every world in batched passes -> (main, wrist), each uint8 [N,S,S,3]."""
    frames = []  # (camera, is_main, boxes, casters)
    for world in worlds:
        boxes, casters = scene_boxes(world, with_hand=True)
        frames.append((MAIN_CAMERA, True, boxes, casters))
    for world in worlds:
        boxes, casters = scene_boxes(world, with_hand=False)
        frames.append((wrist_camera(world), False, boxes, casters))
    per_pass = max(1, FRAME_BATCH_PIXELS // (size * size))
    images = np.concatenate([_render_frames(frames[i:i + per_pass], size) for i in range(0, len(frames), per_pass)])
    return images[: len(worlds)], images[len(worlds):]


def _render_frames(frames: list, size: int) -> np.ndarray:
    cams = _Cameras.of([f[0] for f in frames])
    is_main = np.array([f[1] for f in frames])
    rays = np.empty((len(frames), size * size, 3), np.float32)
    depth = np.empty((len(frames), size * size), np.float32)
    color = np.empty((len(frames), size * size, 3), np.float32)
    rays[is_main], depth[is_main], color[is_main] = _main_view(size)
    if not is_main.all():
        others = np.flatnonzero(~is_main)
        rays[others] = cams.rays(others, size)
        depth[others], color[others] = _background(cams.eye[others], rays[others], size)
    rays, depth, color = rays.reshape(-1, 3), depth.reshape(-1), color.reshape(-1, 3)
    boxes, frame_of_box = _concat([f[2] for f in frames])
    _cast(cams, rays, boxes, frame_of_box, depth, color, size)
    casters, frame_of_caster = _concat([f[3] for f in frames])
    _shade_shadows(cams, rays, casters, frame_of_caster, depth, color, size)
    return (color * 255).astype(np.uint8).reshape(len(frames), size, size, 3)  # colours and shades are <= 1
