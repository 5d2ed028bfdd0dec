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


# ---------------------------------------------------------------------------------------------
# Checking a path (the builder's import, evaluators/maze.py's scoring)
#
# A predicted grid is a valid path when every wall, start and goal of the maze is kept, every
# open cell is open or path (a path cell only where the maze is open), and the path cells with
# start and goal form one simple path: start and goal each have exactly one 4-neighbour in that
# set, every path cell exactly two, and the set is connected. (A route that runs beside itself
# has a cell with three marked neighbours: a set of cells cannot say which way it went, so it is
# not valid. A shortest path never does so.)

TEXT_CHARS = "#.SGo"  # token t (1..5) -> TEXT_CHARS[t - 1] in text; ' ' is read as open too
GRAPH_CHUNK = 32  # mazes per block-diagonal csgraph call


def as_grids(name: str, tokens: np.ndarray, num: Optional[int] = None) -> np.ndarray:
    """(N, n*n) or (N, n, n) integer tokens -> (N, n, n) int64; shape errors name `name`."""
    tokens = np.asarray(tokens)
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{name}: expected integer tokens, got dtype {tokens.dtype}")
    if tokens.ndim == 2:
        side = int(round(tokens.shape[1] ** 0.5))
        if side * side != tokens.shape[1]:
            raise ValueError(f"{name}: {tokens.shape[1]} tokens a maze is not a square grid")
        tokens = tokens.reshape(tokens.shape[0], side, side)
    if tokens.ndim != 3 or tokens.shape[1] != tokens.shape[2] or (num is not None and tokens.shape[0] != num):
        raise ValueError(f"{name}: expected shape ({num if num is not None else 'N'}, n, n) or (N, n*n), got {tokens.shape}")
    return tokens.astype(np.int64)


def check_inputs(inputs: np.ndarray) -> np.ndarray:
    """Mazes as the builder writes them: tokens wall/open/start/goal, one start and one goal."""
    grids = as_grids("inputs", inputs)
    if grids.shape[0] == 0:
        raise ValueError("inputs: no mazes to score")
    if grids.min() < WALL or grids.max() > GOAL:
        raise ValueError(f"inputs: tokens must lie in {WALL}..{GOAL} (wall, open, start, goal), got "
                         f"{grids.min()}..{grids.max()}")
    for token, name in ((START, "start"), (GOAL, "goal")):
        counts = np.count_nonzero(grids == token, axis=(1, 2))
        if np.any(counts != 1):
            i = int(np.flatnonzero(counts != 1)[0])
            raise ValueError(f"inputs: maze {i} has {counts[i]} {name} cells, expected 1")
    return grids


def _neighbour_counts(marked: np.ndarray) -> np.ndarray:
    """(N, n, n) bool -> how many of each cell's 4 neighbours are marked."""
    m = marked.astype(np.int64)
    out = np.zeros_like(m)
    out[:, 1:, :] += m[:, :-1, :]
    out[:, :-1, :] += m[:, 1:, :]
    out[:, :, 1:] += m[:, :, :-1]
    out[:, :, :-1] += m[:, :, 1:]
    return out


def path_problems(inputs: np.ndarray, preds: np.ndarray) -> list[Optional[str]]:
    """Per maze, what makes the predicted grid not a valid path (None: a valid path); the
    rules are the comment above. inputs, preds: (N, n, n) or (N, n*n) tokens."""
    from scipy import ndimage

    grids = as_grids("inputs", inputs)
    preds = as_grids("predicted_labels", preds, grids.shape[0])
    if preds.shape != grids.shape:
        raise ValueError(f"predicted_labels: shape {preds.shape}, inputs {grids.shape}")
    kept = (preds == grids) | ((grids == OPEN) & (preds == PATH))
    marked = (preds == PATH) & kept | (grids == START) | (grids == GOAL)
    degree = _neighbour_counts(marked)
    problems: list[Optional[str]] = []
    for i in range(grids.shape[0]):
        if not kept[i].all():
            r, c = (int(x) for x in np.argwhere(~kept[i])[0])
            problems.append(f"cell ({r}, {c}) is {TEXT_CHARS[grids[i, r, c] - 1]!r} in the maze but "
                            f"{token_char(preds[i, r, c])!r} in the answer")
            continue
        ends = (grids[i] == START) | (grids[i] == GOAL)
        bad_end = ends & (degree[i] != 1)
        bad_step = (preds[i] == PATH) & (degree[i] != 2)
        if bad_end.any():
            r, c = (int(x) for x in np.argwhere(bad_end)[0])
            problems.append(f"{'start' if grids[i, r, c] == START else 'goal'} at ({r}, {c}) has {degree[i, r, c]} "
                            "path neighbours, expected 1")
        elif bad_step.any():
            r, c = (int(x) for x in np.argwhere(bad_step)[0])
            problems.append(f"path cell ({r}, {c}) has {degree[i, r, c]} path neighbours, expected 2 (a dead end, "
                            "a branch or a path touching itself)")
        else:
            pieces = ndimage.label(marked[i])[1]  # the default structure: 4-connectivity
            problems.append(None if pieces == 1 else f"the path falls into {pieces} pieces")
    return problems


def token_char(token: int) -> str:
    return TEXT_CHARS[token - 1] if WALL <= token <= PATH else "?"


def shortest_lengths(inputs: np.ndarray) -> np.ndarray:
    """(N,) moves of the shortest start-goal path of each maze (-1: goal unreachable), from
    scipy.sparse.csgraph on the grid graph of non-wall cells (chunks of mazes, block-diagonal)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path

    grids = check_inputs(inputs)
    num, side, _ = grids.shape
    cells = side * side
    out = np.empty(num, dtype=np.int64)
    for lo in range(0, num, GRAPH_CHUNK):
        chunk = grids[lo:lo + GRAPH_CHUNK]
        walk = chunk != WALL
        index = np.arange(chunk.shape[0] * cells).reshape(chunk.shape)
        right = walk[:, :, :-1] & walk[:, :, 1:]
        down = walk[:, :-1, :] & walk[:, 1:, :]
        rows = np.concatenate([index[:, :, :-1][right], index[:, :-1, :][down]])
        cols = np.concatenate([index[:, :, 1:][right], index[:, 1:, :][down]])
        size = chunk.shape[0] * cells
        graph = coo_matrix((np.ones(rows.shape[0]), (rows, cols)), shape=(size, size)).tocsr()
        starts = index[chunk == START]  # one per maze, in maze order
        goals = index[chunk == GOAL]
        dist = shortest_path(graph, directed=False, unweighted=True, indices=starts)  # (chunk, size)
        found = dist[np.arange(chunk.shape[0]), goals]
        out[lo:lo + chunk.shape[0]] = np.where(np.isfinite(found), found, -1).astype(np.int64)
    return out
