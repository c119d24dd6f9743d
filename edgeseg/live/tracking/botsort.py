"""BoT-SORT (Aharon et al., 2022) without re-identification: ByteTrack's associations with a
``(cx, cy, w, h)`` Kalman state and camera-motion compensation (GMC) in OpenCV.

GMC estimates how the whole image moved between two frames from background features (detections
are masked out, they move on their own) and warps every track's predicted state by it, so a panning
or shaking camera does not break the IoU association. Methods (``gmc_method``):

- ``sparseOptFlow`` (default): Shi-Tomasi corners tracked by pyramidal Lucas-Kanade optical flow,
  a RANSAC similarity transform (``cv2.estimateAffinePartial2D``), kept only when at least 30
  background points were tracked and half of them agree with it: otherwise the camera is taken as still;
- ``ecc``: ``cv2.findTransformECC`` with a Euclidean motion model, started from the shift that
  ``cv2.phaseCorrelate`` finds (slower, uses the whole image);
- ``none``: no compensation (BoT-SORT's Kalman state only).

Work is done on a gray image shrunk by ``gmc_downscale``; the transform is scaled back to pixels.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .bytetrack import ByteTracker
from .config import TrackerConfig

__all__ = ["BoTSORT", "CameraMotion"]


class CameraMotion:
    """Frame-to-frame camera motion as a 2x3 affine (previous frame -> current frame, pixels)."""

    def __init__(self, method: str = "sparseOptFlow", downscale: int = 2) -> None:
        self.method = method
        self.downscale = max(1, int(downscale))
        self._prev: Optional[np.ndarray] = None
        self._prev_pts: Any = None

    def reset(self) -> None:
        self._prev = None
        self._prev_pts = None

    def _gray(self, image: np.ndarray) -> np.ndarray:
        import cv2

        g = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
        if self.downscale > 1:
            g = cv2.resize(g, (g.shape[1] // self.downscale, g.shape[0] // self.downscale), interpolation=cv2.INTER_AREA)
        return g

    def __call__(self, image: Optional[np.ndarray], boxes: Optional[np.ndarray] = None) -> np.ndarray:
        eye = np.eye(2, 3)
        if image is None or self.method == "none":
            return eye
        gray = self._gray(image)
        if self._prev is None or self._prev.shape != gray.shape:
            self._prev = gray
            self._prev_pts = self._features(gray, boxes)
            return eye
        A = self._sparse(gray, boxes) if self.method == "sparseOptFlow" else self._ecc(gray)
        self._prev = gray
        if A is None:
            return eye
        A = A.astype(np.float64)
        A[:, 2] *= self.downscale
        return A

    def _features(self, gray: np.ndarray, boxes: Optional[np.ndarray]) -> Any:
        import cv2

        mask = np.full(gray.shape, 255, np.uint8)
        if boxes is not None and len(boxes):
            for x0, y0, x1, y1 in (np.asarray(boxes) / self.downscale).astype(int):
                mask[max(y0, 0): max(y1, 0), max(x0, 0): max(x1, 0)] = 0
        return cv2.goodFeaturesToTrack(gray, maxCorners=500, qualityLevel=0.01, minDistance=3, blockSize=3,
                                       mask=mask)

    def _sparse(self, gray: np.ndarray, boxes: Optional[np.ndarray]) -> Optional[np.ndarray]:
        import cv2

        prev_pts = self._prev_pts
        self._prev_pts = self._features(gray, boxes)
        if prev_pts is None or len(prev_pts) < 4:
            return None
        pts, status, _ = cv2.calcOpticalFlowPyrLK(self._prev, gray, prev_pts, None)
        if pts is None:
            return None
        ok = status.reshape(-1) == 1
        if ok.sum() < 30:  # too little background texture to tell camera motion from object motion
            return None
        A, inliers = cv2.estimateAffinePartial2D(prev_pts[ok], pts[ok], method=cv2.RANSAC)
        # a motion that only some points agree on is objects moving, not the camera: assume a still one
        if A is None or inliers is None or int(inliers.sum()) < 0.5 * int(ok.sum()):
            return None
        return A

    def _ecc(self, gray: np.ndarray) -> Optional[np.ndarray]:
        import cv2

        # start from the translation found by phase correlation, so shifts wider than the image's
        # finest texture still converge; ECC then refines rotation and sub-pixel shift
        (dx, dy), _ = cv2.phaseCorrelate(self._prev.astype(np.float32), gray.astype(np.float32))
        warp = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5)
        try:
            _, warp = cv2.findTransformECC(self._prev, gray, warp, cv2.MOTION_EUCLIDEAN, criteria, None, 1)
        except cv2.error:  # no convergence on a flat or changing image: assume a still camera
            return None
        return warp  # maps previous-frame points to the current frame (current(W x) ~ previous(x))


class BoTSORT(ByteTracker):
    """ByteTrack's associations with BoT-SORT's xywh Kalman state and camera-motion compensation."""

    name = "botsort"

    def __init__(self, config: Optional[TrackerConfig] = None) -> None:
        super().__init__(config or TrackerConfig.named("botsort"))
        self.gmc = CameraMotion(self.config.gmc_method, self.config.gmc_downscale)

    def reset(self) -> None:
        super().reset()
        self.gmc.reset()

    def camera_motion(self, image: Optional[np.ndarray], boxes: np.ndarray) -> Optional[np.ndarray]:
        if self.config.gmc_method == "none" or image is None:
            return None
        return self.gmc(image, boxes)
