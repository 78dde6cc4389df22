"""Image augmentation for SFT, after openpi's training recipe for pi0.

Every camera gets a colour jitter; cameras that do not ride on the robot (not `*wrist*`) also get a
random crop to `CROP_SCALE` of each side, resized back, and a rotation of up to `MAX_ROTATION_DEG`.
The crop and rotation are one affine resampling: output pixel x_out (coordinates in [-1,1]) reads the
input at

    x_in = s R(a) x_out + t,    s = CROP_SCALE,  |a| <= MAX_ROTATION_DEG,  t ~ U[-(1-s), 1-s]^2

so the objects move a few pixels relative to the frame while staying where they are relative to
each other and to the gripper: the policy cannot key its actions to an absolute pixel position.
Only the demos are augmented; evaluation and RL see the cameras as they are.
"""

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from pi0lab.models.pi0 import Observation

CROP_SCALE = 0.95  # side of the random crop, as a fraction of the image side
MAX_ROTATION_DEG = 5.0
BRIGHTNESS = 0.3  # factors drawn from [1 - x, 1 + x]
CONTRAST = 0.4
SATURATION = 0.5
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma


def crop_rotate(images: Tensor, scale: Tensor, angle: Tensor, shift: Tensor) -> Tensor:
    """Resample images [B,3,H,W] at x_in = scale * R(angle) x_out + shift (normalised coordinates).

    scale [B], angle [B] radians, shift [B,2] as (x, y). Points outside the input read 0 (mid-grey in
    the model's [-1,1] range).
    """
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], -1),
                         torch.stack([sin, cos, shift[:, 1]], -1)], 1)  # [B,2,3]
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def color_jitter(images: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor) -> Tensor:
    """images [B,3,H,W] in [-1,1]; per-image factors [B]. In [0,1] space, with g the luma:

    x <- b x;   x <- mean(g) + c (x - mean(g));   x <- g + s (x - g);   clipped to [0,1].
    """
    weights = torch.tensor(GRAY_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    x = (images + 1) / 2 * brightness.view(-1, 1, 1, 1)
    mean_gray = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)  # [B,1,1,1]
    x = mean_gray + contrast.view(-1, 1, 1, 1) * (x - mean_gray)
    gray = (x * weights).sum(1, keepdim=True)  # [B,1,H,W]
    x = gray + saturation.view(-1, 1, 1, 1) * (x - gray)
    return x.clamp(0, 1) * 2 - 1


def augment_images(images: Tensor, on_robot: bool) -> Tensor:
    """images [B,3,H,W] in [-1,1] -> the same with random crop + rotation (unless on_robot) and colour jitter."""
    n, device = images.shape[0], images.device

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(n, *shape, device=device)

    if not on_robot:
        angle = uniform(-1, 1) * math.radians(MAX_ROTATION_DEG)
        shift = uniform(-1, 1, 2) * (1 - CROP_SCALE)
        images = crop_rotate(images, torch.full((n,), CROP_SCALE, device=device), angle, shift)
    return color_jitter(images, uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS), uniform(1 - CONTRAST, 1 + CONTRAST),
                        uniform(1 - SATURATION, 1 + SATURATION))


def augment_observation(obs: Observation) -> Observation:
    """A copy of a model observation with every camera augmented (wrist cameras: colour only)."""
    images = {camera: augment_images(image, on_robot="wrist" in camera) for camera, image in obs.images.items()}
    return dataclasses.replace(obs, images=images)
