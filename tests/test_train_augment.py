"""SFT image augmentation: the affine resampling against hand-computed crops, colour jitter identities."""

import math

import torch

from pi0lab.train.augment import augment_images, color_jitter, crop_rotate


def test_identity_parameters_return_the_image():
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    ones, zeros = torch.ones(3), torch.zeros(3)
    assert torch.allclose(crop_rotate(images, ones, zeros, torch.zeros(3, 2)), images, atol=1e-6)
    assert torch.allclose(color_jitter(images, ones, ones, ones), images, atol=1e-6)


def test_half_scale_crop_of_the_top_left_quadrant():
    # x_in = 0.5 x_out + (-0.5, -0.5) maps the output onto the input's top-left quadrant, magnified 2x.
    images = -torch.ones(1, 3, 16, 16)
    images[..., :8, :8] = 1.0
    out = crop_rotate(images, torch.tensor([0.5]), torch.zeros(1), torch.tensor([[-0.5, -0.5]]))
    assert torch.allclose(out[..., 1:-1, 1:-1], torch.ones(1, 3, 14, 14))


def test_quarter_turn_moves_the_right_column_to_the_top_row():
    # With R(90 deg), output (x, y) reads input (-y, x): output row 0 (y = -1) reads input column x = +1.
    images = -torch.ones(1, 3, 8, 8)
    images[..., :, -1] = 1.0
    out = crop_rotate(images, torch.ones(1), torch.tensor([math.pi / 2]), torch.zeros(1, 2))
    assert torch.allclose(out[..., 0, :], torch.ones(1, 3, 8), atol=1e-5)
    assert torch.allclose(out[..., 1:, :], -torch.ones(1, 3, 7, 8), atol=1e-5)


def test_zero_saturation_gives_gray_and_zero_contrast_gives_the_mean():
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    ones = torch.ones(2)
    gray = color_jitter(images, ones, ones, torch.zeros(2))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    flat = color_jitter(images, ones, torch.zeros(2), ones)
    assert torch.allclose(flat, flat[..., :1, :1].expand_as(flat))


def test_random_augmentation_keeps_shape_and_range_and_wrist_geometry():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    for on_robot in (False, True):
        out = augment_images(images, on_robot)
        assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
    # colour jitter is per-pixel affine in colour: a constant image stays constant on the robot camera
    flat = torch.full((2, 3, 32, 32), 0.2)
    out = augment_images(flat, on_robot=True)
    assert torch.allclose(out, out[..., :1, :1].expand_as(out), atol=1e-6)
