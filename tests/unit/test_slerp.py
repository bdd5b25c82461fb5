"""slerp: against scipy's geometric_slerp, and the cases the usual snippet gets wrong (NaN)."""
import numpy as np
import pytest
import torch
from scipy.spatial import geometric_slerp

from clipspace.unclip.slerp import slerp


def unit(rng, *shape):
    v = rng.standard_normal(shape)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_matches_scipy_geometric_slerp(rng):
    a, b = unit(rng, 16), unit(rng, 16)
    ts = np.linspace(0, 1, 9)
    np.testing.assert_allclose(slerp(a, b, ts), geometric_slerp(a, b, ts), atol=1e-10)


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_identical_vectors_give_the_vector_not_nan(rng, lib):
    v = unit(rng, 128).astype(np.float32)
    v = torch.from_numpy(v) if lib == "torch" else v
    for t in (0.0, 0.3, 1.0):
        out = slerp(v, v, t)
        assert type(out) is type(v) and out.dtype == v.dtype
        np.testing.assert_allclose(np.asarray(out), np.asarray(v), atol=1e-6)
    # a rounding-level difference: the dot product exceeds 1 before clamping
    w = v * (1 + 1e-7)
    assert not np.isnan(np.asarray(slerp(v, w, 0.5))).any()


def test_opposite_vectors_stay_on_the_sphere(rng):
    a = unit(rng, 32)
    ts = np.linspace(0, 1, 11)
    path = slerp(a, -a, ts)
    assert np.isfinite(path).all()
    np.testing.assert_allclose(np.linalg.norm(path, axis=-1), 1.0, atol=1e-9)
    np.testing.assert_allclose(path[0], a, atol=1e-9)
    np.testing.assert_allclose(path[-1], -a, atol=1e-9)
    np.testing.assert_allclose(np.arccos(np.clip(path @ a, -1, 1)), np.pi * ts, atol=1e-6)


def test_endpoints_unit_norm_and_linear_angle(rng):
    a, b = unit(rng, 64), unit(rng, 64)
    ts = np.linspace(0, 1, 21)
    path = slerp(a, b, ts)
    np.testing.assert_allclose(path[0], a, atol=1e-12)
    np.testing.assert_allclose(path[-1], b, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(path, axis=-1), 1.0, atol=1e-12)
    omega = np.arccos(a @ b)
    np.testing.assert_allclose(np.arccos(np.clip(path @ a, -1, 1)), ts * omega, atol=1e-7)


def test_tiny_angles_fall_back_to_lerp(rng):
    a = unit(rng, 8)
    b = a + 1e-7 * unit(rng, 8)
    np.testing.assert_allclose(slerp(a, b, 0.25), 0.75 * a + 0.25 * b, atol=1e-12)


def test_batched_rows_equal_one_at_a_time_in_torch(rng):
    a, b = torch.from_numpy(unit(rng, 5, 16)), torch.from_numpy(unit(rng, 5, 16))
    b[2] = a[2]  # an identical pair inside the batch
    b[3] = -a[3]  # and an opposite one
    t = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0])
    out = slerp(a, b, t)
    assert out.shape == (5, 16) and torch.isfinite(out).all()
    for i in range(5):
        torch.testing.assert_close(out[i], slerp(a[i], b[i], float(t[i])))
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5, dtype=out.dtype))


def test_non_unit_vectors_use_the_same_weights(rng):
    # Gaussian noise x_T: the path keeps the norm of a typical sample, as in the DDIM paper.
    a, b = rng.standard_normal(1000), rng.standard_normal(1000)
    mid = slerp(a, b, 0.5)
    omega = np.arccos(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    np.testing.assert_allclose(mid, np.sin(omega / 2) / np.sin(omega) * (a + b), atol=1e-10)
