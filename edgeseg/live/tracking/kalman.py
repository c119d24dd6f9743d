"""A constant-velocity Kalman filter for boxes, in numpy, stepping by elapsed time.

The state is ``(cx, cy, a, h, vcx, vcy, va, vh)`` (ByteTrack: centre, aspect ratio w/h, height) or
``(cx, cy, w, h, ...)`` (BoT-SORT); velocities are per *frame* of the source. ``dt`` (frames since
the last step, may be fractional or more than one when a live source skipped frames) scales both the
motion and the process noise, so a track predicted over a gap of 3 frames moves and widens as much
as over 3 single steps. Noise scales with the box height (``xyah``) or size (``xywh``), as in
DeepSORT/ByteTrack/BoT-SORT.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["KalmanBoxFilter", "xyxy_to_state", "state_to_xyxy"]

_STD_POS = 1.0 / 20
_STD_VEL = 1.0 / 160


def xyxy_to_state(boxes: np.ndarray, mode: str = "xyah") -> np.ndarray:
    """(N, 4) xyxy -> (N, 4) measurement: ``cx, cy, w/h, h`` (xyah) or ``cx, cy, w, h`` (xywh)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    w = np.maximum(b[:, 2] - b[:, 0], 1e-3)
    h = np.maximum(b[:, 3] - b[:, 1], 1e-3)
    third = w / h if mode == "xyah" else w
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, third, h], axis=1)


def state_to_xyxy(mean: np.ndarray, mode: str = "xyah") -> np.ndarray:
    """(N, >=4) state -> (N, 4) xyxy boxes."""
    m = np.asarray(mean, np.float64).reshape(len(mean), -1)
    h = m[:, 3]
    w = m[:, 2] * h if mode == "xyah" else m[:, 2]
    return np.stack([m[:, 0] - w / 2, m[:, 1] - h / 2, m[:, 0] + w / 2, m[:, 1] + h / 2], axis=1)


class KalmanBoxFilter:
    """Batched constant-velocity filter: every method takes and returns stacked states of N tracks
    (``mean`` (N, 8), ``cov`` (N, 8, 8))."""

    def __init__(self, mode: str = "xyah") -> None:
        if mode not in ("xyah", "xywh"):
            raise ValueError(f"KalmanBoxFilter mode must be 'xyah' or 'xywh', got {mode!r}")
        self.mode = mode
        self._H = np.eye(4, 8)

    def _std(self, m: np.ndarray, weight: float, aspect: float) -> np.ndarray:
        """(N, 4) noise std per measured value: ``weight`` x height (xyah; the aspect ratio gets the
        fixed ``aspect``) or ``weight`` x (w, h, w, h) (xywh)."""
        if self.mode == "xyah":
            h = m[:, 3] * weight
            return np.stack([h, h, np.full_like(h, aspect), h], axis=1)
        return np.stack([m[:, 2], m[:, 3], m[:, 2], m[:, 3]], axis=1) * weight

    def initiate(self, measurement: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(N, 4) measurements -> new states with zero velocity and a wide velocity covariance."""
        z = np.asarray(measurement, np.float64).reshape(-1, 4)
        mean = np.concatenate([z, np.zeros_like(z)], axis=1)
        std = np.concatenate([2 * self._std(z, _STD_POS, 1e-2), 10 * self._std(z, _STD_VEL, 1e-5)], axis=1)
        cov = np.zeros((len(z), 8, 8))
        idx = np.arange(8)
        cov[:, idx, idx] = std ** 2
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray, dt: "float | np.ndarray" = 1.0) -> Tuple[np.ndarray, np.ndarray]:
        """Advance N states by ``dt`` frames (a scalar or one value per track)."""
        n = len(mean)
        if n == 0:
            return mean, cov
        dt = np.broadcast_to(np.asarray(dt, np.float64), (n,))
        F = np.tile(np.eye(8), (n, 1, 1))
        F[:, np.arange(4), np.arange(4) + 4] = dt[:, None]
        std = np.concatenate([self._std(mean, _STD_POS, 1e-2), self._std(mean, _STD_VEL, 1e-5)], axis=1)
        q = (std ** 2) * dt[:, None]
        mean = (F @ mean[:, :, None])[:, :, 0]
        cov = F @ cov @ F.transpose(0, 2, 1)
        idx = np.arange(8)
        cov[:, idx, idx] += q
        return mean, cov

    def project(self, mean: np.ndarray, cov: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """States -> measurement space (N, 4) and its covariance (N, 4, 4) with measurement noise."""
        std = self._std(mean, _STD_POS, 1e-1)
        S = cov[:, :4, :4].copy()
        idx = np.arange(4)
        S[:, idx, idx] += std ** 2
        return mean[:, :4].copy(), S

    def update(self, mean: np.ndarray, cov: np.ndarray, measurement: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Correct N states with N measurements (N, 4)."""
        if len(mean) == 0:
            return mean, cov
        z = np.asarray(measurement, np.float64).reshape(-1, 4)
        proj_mean, S = self.project(mean, cov)
        PHt = cov[:, :, :4]  # P H^T
        K = np.linalg.solve(S, PHt.transpose(0, 2, 1)).transpose(0, 2, 1)  # (N, 8, 4); S symmetric
        innovation = z - proj_mean
        mean = mean + (K @ innovation[:, :, None])[:, :, 0]
        cov = cov - K @ S @ K.transpose(0, 2, 1)
        return mean, cov

    def warp(self, mean: np.ndarray, cov: np.ndarray, affine: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Apply a 2x3 camera-motion affine (previous frame -> this frame) to N states (BoT-SORT's GMC)."""
        if len(mean) == 0:
            return mean, cov
        A = np.asarray(affine, np.float64).reshape(2, 3)
        R, t = A[:, :2], A[:, 2]
        # acts on the (x, y) and (vx, vy) pairs, and on (w, h), (vw, vh) for xywh (aspect ratios stay)
        R8 = np.kron(np.eye(4), R) if self.mode == "xywh" else np.eye(8)
        if self.mode == "xyah":
            R8[0:2, 0:2] = R
            R8[4:6, 4:6] = R
        mean = mean @ R8.T
        mean[:, :2] += t
        cov = R8 @ cov @ R8.T
        return mean, cov
