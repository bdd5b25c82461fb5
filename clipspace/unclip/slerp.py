"""Spherical linear interpolation that never returns NaN, for numpy arrays and torch tensors.

slerp(a, b, t) walks the great circle from a to b: the angle to a grows linearly in t, and unit
inputs stay unit. Written out because the usual snippet (diffusers' community pipelines among
them) divides by sin(angle) and so returns NaN for identical vectors. Here:
- the cosine is clamped to [-1, 1] (rounding makes it 1.0000001);
- tiny angles fall back to lerp (slerp's limit; the error is O(angle^2));
- opposite vectors, where every great circle is a shortest path, take a fixed one: through the
  direction orthogonal to a nearest to the coordinate axis a points least along.
For non-unit inputs (Gaussian noise x_T) the same weights apply to the vectors as given, as in
the DDIM and unCLIP papers' slerp of noise.
"""
from __future__ import annotations

import numpy as np
import torch

_TINY = 1e-4  # radians: below this lerp is exact to ~1e-8


def slerp(a, b, t):
    """Interpolate along the last axis. a, b: (..., D); t: a scalar or an array broadcasting
    against the leading axes (a (D,) pair with t of shape (n,) gives (n, D)). Numpy in, numpy out;
    torch in, torch out (dtype and device kept)."""
    is_numpy = not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor)
    ref = a if isinstance(a, torch.Tensor) else b if isinstance(b, torch.Tensor) else None
    out_dtype = np.result_type(np.asarray(a).dtype, np.float32) if is_numpy else ref.dtype
    device = None if is_numpy else ref.device
    a, b = (torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v, dtype=torch.float64,
                            device=device) for v in (a, b))
    t = torch.as_tensor(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64),
                        dtype=torch.float64, device=device)[..., None]
    out = _slerp(a, b, t)
    if is_numpy:
        return out.cpu().numpy().astype(out_dtype)
    return out.to(out_dtype)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-300), b / nb.clamp_min(1e-300)
    omega = torch.arccos((ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    sin = torch.sin(omega)
    near_same, near_opposite = omega < _TINY, omega > torch.pi - _TINY
    safe_sin = torch.where(near_same | near_opposite, torch.ones_like(sin), sin)
    out = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / safe_sin
    out = torch.where(near_same, (1 - t) * a + t * b, out)
    if bool(near_opposite.any()):
        # Rotate a through a fixed orthogonal direction p; the norm goes linearly from |a| to |b|.
        axis = torch.nn.functional.one_hot(ua.abs().argmin(-1), ua.shape[-1]).to(ua)
        p = axis - (axis * ua).sum(-1, keepdim=True) * ua
        p = p / p.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        half_turn = (torch.cos(torch.pi * t) * ua + torch.sin(torch.pi * t) * p) * ((1 - t) * na + t * nb)
        out = torch.where(near_opposite, half_turn, out)
    return out
