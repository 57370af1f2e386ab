"""Voxel grids placed in physical space.

Convention, used everywhere in UAD: world coordinates are **RAS+ millimetres** (the
first world axis points to the patient's Right, the second Anterior, the third
Superior), as in NIfTI, nibabel and 3D Slicer's views. A voxel array ``a`` of shape
``(I, J, K)`` on a grid has its voxel ``a[i, j, k]`` centred at the world point
``affine @ (i, j, k, 1)``. Files in LPS (DICOM, NRRD, MetaImage as read by ITK) are
converted on reading and writing, so nothing past `uadcore.io` ever sees LPS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# RAS = LPS_TO_RAS @ LPS (and back: the matrix is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Grid:
    """A 3D voxel grid: its shape and the 4x4 affine from voxel index to RAS mm."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self):
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"a grid needs three positive sizes, got {self.shape}")
        affine = np.asarray(self.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            raise ValueError(f"a grid affine is 4x4, got {affine.shape}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError("a grid affine must be invertible")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", affine)

    # ---- construction -------------------------------------------------------
    @classmethod
    def from_parts(cls, shape, origin, spacing, direction=None) -> "Grid":
        """Grid from the origin (world point of voxel 0,0,0), spacing in mm and a
        3x3 direction matrix whose columns are the unit world vectors of the i, j,
        k axes (identity = RAS-aligned)."""
        direction = np.eye(3) if direction is None else np.asarray(direction, float)
        affine = np.eye(4)
        affine[:3, :3] = direction * np.asarray(spacing, float)[None, :]
        affine[:3, 3] = origin
        return cls(tuple(shape), affine)

    @classmethod
    def centred(cls, centre, spacing, shape, direction=None) -> "Grid":
        """Grid of ``shape`` voxels whose middle lies at the world point ``centre``."""
        direction = np.eye(3) if direction is None else np.asarray(direction, float)
        spacing = np.asarray(spacing, float)
        half_extent = (np.asarray(shape, float) - 1.0) / 2.0 * spacing
        origin = np.asarray(centre, float) - direction @ half_extent
        return cls.from_parts(shape, origin, spacing, direction)

    @classmethod
    def from_lps(cls, shape, origin_lps, spacing, direction_lps) -> "Grid":
        """Grid from ITK-style (LPS) origin and direction."""
        return cls.from_parts(
            shape,
            LPS_TO_RAS @ np.asarray(origin_lps, float),
            spacing,
            LPS_TO_RAS @ np.asarray(direction_lps, float).reshape(3, 3),
        )

    @classmethod
    def from_dict(cls, data: dict) -> "Grid":
        return cls(tuple(data["shape"]), np.asarray(data["affine"], float))

    def to_dict(self) -> dict:
        """JSON-serialisable form, stored in checkpoints and reports."""
        return {"shape": list(self.shape), "affine": self.affine.tolist()}

    # ---- parts --------------------------------------------------------------
    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k, shape (3,)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit world directions of i, j, k."""
        return self.affine[:3, :3] / self.spacing[None, :]

    @property
    def origin(self) -> np.ndarray:
        """World point (RAS mm) of voxel (0, 0, 0), shape (3,)."""
        return self.affine[:3, 3].copy()

    def lps_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(origin, spacing, direction) in ITK's LPS convention."""
        return LPS_TO_RAS @ self.origin, self.spacing, LPS_TO_RAS @ self.direction

    # ---- coordinates --------------------------------------------------------
    def index_to_world(self, ijk) -> np.ndarray:
        """Continuous voxel indices (N, 3) -> RAS mm (N, 3)."""
        ijk = np.atleast_2d(np.asarray(ijk, float))
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, ras) -> np.ndarray:
        """RAS mm (N, 3) -> continuous voxel indices (N, 3)."""
        ras = np.atleast_2d(np.asarray(ras, float))
        inverse = np.linalg.inv(self.affine)
        return ras @ inverse[:3, :3].T + inverse[:3, 3]

    def corners(self) -> np.ndarray:
        """World points of the 8 corner voxel centres, shape (8, 3)."""
        last = np.asarray(self.shape) - 1
        ijk = np.array([[i, j, k] for i in (0, last[0]) for j in (0, last[1]) for k in (0, last[2])])
        return self.index_to_world(ijk)

    def matches(self, other: "Grid", tolerance: float = 1e-3) -> bool:
        """Same shape and the same voxel positions, to ``tolerance`` voxels."""
        if self.shape != other.shape:
            return False
        drift = np.abs(self.index_to_world(other.world_to_index(self.corners())) - self.corners())
        return bool(drift.max() <= tolerance * self.spacing.min())

    def difference(self, other: "Grid") -> str:
        """What differs between this grid and ``other``, in words, for messages
        (the shape, the voxel size, the axes, or how far the voxels are shifted)."""
        if self.shape != other.shape:
            return f"{'x'.join(map(str, other.shape))} voxels instead of {'x'.join(map(str, self.shape))}"
        if not np.allclose(self.spacing, other.spacing, rtol=1e-3):
            return (f"voxels of {'x'.join(f'{v:g}' for v in np.round(other.spacing, 3))} mm instead of "
                    f"{'x'.join(f'{v:g}' for v in np.round(self.spacing, 3))} mm")
        if not np.allclose(self.direction, other.direction, atol=1e-3):
            return f"axes {orientation_code(other.direction)} instead of {orientation_code(self.direction)} (or rotated)"
        shift = other.index_to_world(np.zeros((1, 3)))[0] - self.index_to_world(np.zeros((1, 3)))[0]
        return f"the same voxel size and axes, shifted by {np.linalg.norm(shift):.3g} mm ({', '.join(f'{v:+.3g}' for v in shift)} mm RAS)"

    def describe(self) -> str:
        """One line for messages: size, spacing and axis orientation code."""
        size = "x".join(str(n) for n in self.shape)
        spacing = "x".join(f"{s:g}" for s in np.round(self.spacing, 3))
        return f"{size} voxels of {spacing} mm, {orientation_code(self.direction)}"


def orientation_code(direction: np.ndarray) -> str:
    """Three-letter code of the world direction each voxel axis points to, e.g.
    'RAS' or 'LPS'; a trailing '~' marks an oblique grid (axes not world-aligned)."""
    letters = (("L", "R"), ("P", "A"), ("I", "S"))
    code = ""
    for column in np.asarray(direction).T:
        axis = int(np.argmax(np.abs(column)))
        code += letters[axis][int(column[axis] > 0)]
    oblique = np.abs(np.asarray(direction)).max(axis=0).min() < 1 - 1e-6
    return code + ("~" if oblique else "")
