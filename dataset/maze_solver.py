"""Maze mechanics shared by the Maze builder, its CSV reader and evaluators/maze.py.

A maze is an (n, n) grid of tokens (the public Maze-Hard encoding, characters "# SGo" -> 1..5):

    0 pad (never in a maze)   1 '#' wall   2 ' ' open   3 'S' start   4 'G' goal   5 'o' path

The input holds walls, open cells, one start and one goal; its label is the same grid with the
cells of the shortest path strictly between start and goal marked as path (5). Moves go between
4-neighbouring non-wall cells; the grid's edge is a wall. A path's length is its number of
moves (path cells + 1).

Generation: a perfect maze (a tree: one route between any two cells) carved by a randomised
depth-first search on the cells at even coordinates (the passages between them at one odd
coordinate; cells at two odd coordinates stay walls), then a fraction of the remaining walls
between neighbouring cells opened (loops: the tree's one route is no longer the only route).
The start is a random cell; a breadth-first search from it counts the shortest paths to every
cell (capped at 2); the goal is a random cell whose shortest path is at least the wanted length
and unique. Everything is plain Python / numpy, seeded by the caller's Generator.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

import numpy as np

PAD, WALL, OPEN, START, GOAL, PATH = 0, 1, 2, 3, 4, 5
VOCAB_SIZE = 6
CSV_CHARS = "# SGo"  # token t (1..5) <-> CSV_CHARS[t - 1], the public Maze-Hard CSV format
MIN_SIZE, MAX_SIZE = 3, 64
NEIGHBOURS = ((-1, 0), (1, 0), (0, -1), (0, 1))


# ---------------------------------------------------------------------------------------------
# Generation


def carve_maze(rng: np.random.Generator, size: int, loop_fraction: float) -> np.ndarray:
    """(size, size) uint8 grid of WALL/OPEN: a depth-first-search maze on the even
    coordinates, then `loop_fraction` of the walls still standing between two neighbouring
    cells opened at random."""
    cells = (size + 1) // 2  # cells per side, at coordinates 0, 2, ..., 2 * (cells - 1)
    grid = np.full((size, size), WALL, dtype=np.uint8)
    visited = np.zeros((cells, cells), dtype=bool)
    order = rng.random((cells * cells, 4)).argsort(axis=1)  # each cell's neighbour order
    start = int(rng.integers(cells * cells))
    stack = [divmod(start, cells)]
    visited[stack[0]] = True
    grid[2 * stack[0][0], 2 * stack[0][1]] = OPEN
    tried = np.zeros(cells * cells, dtype=np.int64)  # how many of a cell's neighbours were looked at
    while stack:
        r, c = stack[-1]
        k = r * cells + c
        moved = False
        while tried[k] < 4:
            dr, dc = NEIGHBOURS[order[k, tried[k]]]
            tried[k] += 1
            nr, nc = r + dr, c + dc
            if 0 <= nr < cells and 0 <= nc < cells and not visited[nr, nc]:
                visited[nr, nc] = True
                grid[2 * r + dr, 2 * c + dc] = OPEN
                grid[2 * nr, 2 * nc] = OPEN
                stack.append((nr, nc))
                moved = True
                break
        if not moved:
            stack.pop()
    if loop_fraction > 0:
        # Walls between two cells: one odd coordinate, one even, inside the cell lattice.
        rows, cols = np.nonzero(grid == WALL)
        between = ((rows + cols) % 2 == 1) & (rows <= 2 * (cells - 1)) & (cols <= 2 * (cells - 1))
        rows, cols = rows[between], cols[between]
        count = int(round(loop_fraction * rows.shape[0]))
        if count:
            pick = rng.choice(rows.shape[0], size=count, replace=False)
            grid[rows[pick], cols[pick]] = OPEN
    return grid


def bfs_counts(grid: np.ndarray, start: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (moves; -1 = unreachable) and the number of shortest paths (capped at 2) from
    `start` to every cell of `grid` (any token other than WALL and PAD is walkable)."""
    size = grid.shape[0]
    walkable = (grid != WALL) & (grid != PAD)
    dist = np.full(grid.shape, -1, dtype=np.int64)
    count = np.zeros(grid.shape, dtype=np.int64)
    dist[start], count[start] = 0, 1
    queue = deque([start])
    walk, d, n = walkable.tolist(), dist.tolist(), count.tolist()  # lists: ~10x faster per cell than numpy
    while queue:
        r, c = queue.popleft()
        here, ways = d[r][c], n[r][c]
        for dr, dc in NEIGHBOURS:
            nr, nc = r + dr, c + dc
            if 0 <= nr < size and 0 <= nc < size and walk[nr][nc]:
                if d[nr][nc] < 0:
                    d[nr][nc] = here + 1
                    n[nr][nc] = ways
                    queue.append((nr, nc))
                elif d[nr][nc] == here + 1:
                    n[nr][nc] = min(2, n[nr][nc] + ways)
    return np.array(d, dtype=np.int64), np.array(n, dtype=np.int64)


def trace_path(dist: np.ndarray, goal: tuple[int, int]) -> list[tuple[int, int]]:
    """The cells strictly between start and `goal` on a shortest path, start side first, by
    stepping back through a neighbour one move closer (the one path when it is unique)."""
    size = dist.shape[0]
    path = []
    r, c = goal
    while dist[r, c] > 1:
        for dr, dc in NEIGHBOURS:
            nr, nc = r + dr, c + dc
            if 0 <= nr < size and 0 <= nc < size and dist[nr, nc] == dist[r, c] - 1:
                r, c = nr, nc
                break
        path.append((r, c))
    return path[::-1]


def generate_maze(rng: np.random.Generator, size: int, min_path: int, loop_fraction: float
                  ) -> Optional[tuple[np.ndarray, np.ndarray, int]]:
    """One try: (inputs, labels, path length) as (size, size) uint8 token grids, or None when no
    goal is at least `min_path` moves from the drawn start with a unique shortest path."""
    grid = carve_maze(rng, size, loop_fraction)
    open_rows, open_cols = np.nonzero(grid == OPEN)
    k = int(rng.integers(open_rows.shape[0]))
    start = (int(open_rows[k]), int(open_cols[k]))
    dist, count = bfs_counts(grid, start)
    goals = np.flatnonzero(((dist >= min_path) & (count == 1)).reshape(-1))
    if goals.shape[0] == 0:
        return None
    goal = divmod(int(goals[rng.integers(goals.shape[0])]), size)
    inputs = grid.copy()
    inputs[start], inputs[goal] = START, GOAL
    labels = inputs.copy()
    for cell in trace_path(dist, goal):
        labels[cell] = PATH
    return inputs, labels, int(dist[goal])


# ---------------------------------------------------------------------------------------------
# Symmetries: the 8 of the square (the dihedral group), on the last two axes


def dihedral(grids: np.ndarray, k: int) -> np.ndarray:
    """Symmetry k in 0..7 of (..., n, n) grids: a transpose when k >= 4, then k % 4 quarter
    turns. k = 0 is the identity. A maze's symmetric image is a maze whose shortest path is the
    image of the shortest path."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral symmetry {k}: expected 0..7")
    out = np.swapaxes(grids, -1, -2) if k >= 4 else grids
    return np.rot90(out, k % 4, axes=(-2, -1))


def inverse_dihedral(k: int) -> int:
    """The symmetry that undoes k: a transpose-then-turn is its own inverse; a turn's inverse
    turns back."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral symmetry {k}: expected 0..7")
    return k if k >= 4 else (4 - k) % 4
