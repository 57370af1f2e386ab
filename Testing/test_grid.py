"""Grids: RAS convention, LPS conversion, orientation codes."""

import numpy as np

from uadcore.io import Grid, orientation_code


def test_index_and_world_are_inverse():
    grid = Grid.from_parts((5, 6, 7), (10.0, -3.0, 2.0), (0.5, 1.5, 3.0), np.diag([-1.0, -1.0, 1.0]))
    ijk = np.array([[0, 0, 0], [4, 5, 6], [1.5, 2.25, 3.0]])
    np.testing.assert_allclose(grid.world_to_index(grid.index_to_world(ijk)), ijk, atol=1e-12)
    np.testing.assert_allclose(grid.index_to_world([[1, 0, 0]]), [[9.5, -3.0, 2.0]])


def test_lps_round_trip():
    grid = Grid.from_lps((3, 4, 5), (1.0, 2.0, 3.0), (1.0, 2.0, 3.0), np.eye(3))
    assert orientation_code(grid.direction) == "LPS"
    np.testing.assert_allclose(grid.origin, [-1.0, -2.0, 3.0])
    origin, spacing, direction = grid.lps_parts()
    np.testing.assert_allclose(origin, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(direction, np.eye(3))


def test_centred_grid_has_its_middle_at_the_centre():
    grid = Grid.centred((1.0, 2.0, 3.0), (2.0, 2.0, 2.0), (5, 7, 9), np.diag([-1.0, 1.0, -1.0]))
    np.testing.assert_allclose(grid.index_to_world([[2, 3, 4]])[0], [1.0, 2.0, 3.0])


def test_orientation_codes():
    assert orientation_code(np.eye(3)) == "RAS"
    assert orientation_code(np.array([[0, 0, -1.0], [-1.0, 0, 0], [0, 1.0, 0]])) == "PSL"
    c, s = np.cos(0.3), np.sin(0.3)
    assert orientation_code(np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])) == "RAS~"


def test_matches_tolerates_rounding_only():
    grid = Grid.from_parts((5, 6, 7), (0, 0, 0), (1.0, 1.0, 1.0))
    nudged = Grid(grid.shape, grid.affine + 1e-6)
    moved = Grid.from_parts((5, 6, 7), (0.5, 0, 0), (1.0, 1.0, 1.0))
    assert grid.matches(nudged) and not grid.matches(moved)
    assert Grid.from_dict(grid.to_dict()).matches(grid)
