"""A pure-Python 9x9 Sudoku solver and unique-puzzle generator.

Grids are flat length-81 sequences, row-major, digits 1..9 and 0 for a blank. Internally a
cell is a 9-bit candidate mask (bit d = digit d+1). Search = constraint propagation (naked
singles: a fixed cell's digit leaves its 20 peers; hidden singles: a digit with one place left
in a row, column or box goes there) plus depth-first branching on a cell with the fewest
candidates (MRV; ties -> lowest cell index; digits tried in ascending order).

Rating ("backtracks"): the number of branches whose propagation ends in a contradiction while
the search above explores the *whole* tree of a uniquely solvable puzzle (i.e. finds the
solution and proves there is no second one). 0 means singles alone solve the puzzle. The tree
is explored completely, so the count does not depend on the order digits are tried in; it is
invariant under digit relabelling but not under all row/column symmetries (MRV ties break by
cell index).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

ALL_DIGITS = 0x1FF
POPCOUNT = tuple(bin(m).count("1") for m in range(512))
DIGIT_OF_BIT = {1 << d: d + 1 for d in range(9)}

ROWS = tuple(tuple(r * 9 + c for c in range(9)) for r in range(9))
COLS = tuple(tuple(r * 9 + c for r in range(9)) for c in range(9))
BOXES = tuple(
    tuple((br * 3 + r) * 9 + bc * 3 + c for r in range(3) for c in range(3)) for br in range(3) for bc in range(3)
)
UNITS = ROWS + COLS + BOXES
PEERS = tuple(
    tuple(sorted({p for unit in UNITS if cell in unit for p in unit} - {cell})) for cell in range(81)
)


class SearchStats:
    """Counters of one search: `dead_ends` is the rating defined in the module docstring."""

    __slots__ = ("dead_ends", "nodes")

    def __init__(self) -> None:
        self.dead_ends = 0
        self.nodes = 0


def _propagate(cand: list[int], queue: list[int], peers=PEERS, units=UNITS) -> bool:
    """Apply naked and hidden singles until nothing changes; False on a contradiction.

    `queue` holds cells whose (single) digit has not yet been removed from their peers.
    (`peers` and `units` are bound as locals for speed: this loop is the generator's hot spot.)"""
    while True:
        while queue:
            cell = queue.pop()
            bit = cand[cell]
            for peer in peers[cell]:
                mask = cand[peer]
                if mask & bit:
                    mask ^= bit
                    if not mask:
                        return False
                    cand[peer] = mask
                    if not mask & (mask - 1):
                        queue.append(peer)
        for unit in units:
            once = twice = 0
            for cell in unit:
                mask = cand[cell]
                twice |= once & mask
                once |= mask
            if once != ALL_DIGITS:
                return False  # some digit has no place left in this unit
            only = once & ~twice
            if only:
                for cell in unit:
                    mask = cand[cell]
                    hit = mask & only
                    if hit and mask != hit:
                        if hit & (hit - 1):
                            return False  # one cell is the only place for two digits
                        cand[cell] = hit
                        queue.append(cell)
        if not queue:
            return True


def _search(
    cand: list[int],
    limit: int,
    solutions: list[list[int]],
    stats: SearchStats,
    digit_order: Optional[Sequence[Sequence[int]]],
) -> None:
    """Depth-first search from a propagated state, appending up to `limit` solutions."""
    stats.nodes += 1
    best_cell, best_count = -1, 10
    for cell in range(81):
        count = POPCOUNT[cand[cell]]
        if 1 < count < best_count:
            best_cell, best_count = cell, count
            if count == 2:
                break
    if best_cell < 0:
        solutions.append(cand)
        return
    mask = cand[best_cell]
    if digit_order is None:
        bits = []
        while mask:
            bit = mask & -mask
            bits.append(bit)
            mask ^= bit
    else:
        bits = [1 << (d - 1) for d in digit_order[best_cell] if mask & (1 << (d - 1))]
    for bit in bits:
        child = cand.copy()
        child[best_cell] = bit
        if _propagate(child, [best_cell]):
            _search(child, limit, solutions, stats, digit_order)
            if len(solutions) >= limit:
                return
        else:
            stats.dead_ends += 1


def _initial_candidates(grid: Sequence[int]) -> tuple[list[int], list[int]]:
    cand = [ALL_DIGITS] * 81
    queue = []
    for cell, digit in enumerate(grid):
        if digit:
            cand[cell] = 1 << (int(digit) - 1)
            queue.append(cell)
    return cand, queue


def solve(
    grid: Sequence[int], limit: int = 2, digit_order: Optional[Sequence[Sequence[int]]] = None
) -> tuple[list[list[int]], SearchStats]:
    """Up to `limit` solutions of a grid (81 digits, 0 = blank) as digit lists, and the stats.

    With `limit` >= 2 and a unique solution the search is exhaustive, so `stats.dead_ends` is
    the rating. `digit_order[cell]` (digits 1..9) overrides the ascending branching order."""
    if len(grid) != 81:
        raise ValueError(f"solve: expected 81 cells, got {len(grid)}")
    cand, queue = _initial_candidates(grid)
    solutions: list[list[int]] = []
    stats = SearchStats()
    if _propagate(cand, queue):
        _search(cand, limit, solutions, stats, digit_order)
    else:
        stats.dead_ends += 1
    return [[DIGIT_OF_BIT[m] for m in s] for s in solutions], stats


def is_valid_solution(grid: Sequence[int]) -> bool:
    """Every row, column and box holds 1..9 exactly once."""
    if len(grid) != 81:
        return False
    return all(sorted(grid[c] for c in unit) == list(range(1, 10)) for unit in UNITS)


def random_full_grid(rng: np.random.Generator) -> list[int]:
    """A random complete grid: the empty grid solved with a random digit order in every cell."""
    digit_order = (rng.random((81, 9)).argsort(axis=1) + 1).tolist()
    solutions, _ = solve([0] * 81, limit=1, digit_order=digit_order)
    return solutions[0]


def generate_puzzle(
    rng: np.random.Generator, target_clues: int, max_clues: Optional[int] = None
) -> Optional[tuple[list[int], list[int], int]]:
    """A puzzle with exactly one solution and, where the removal order allows, exactly
    `target_clues` givens: (puzzle, solution, rating); None when it ends above `max_clues`.

    Keep `target_clues` random clues of a random full grid; while the puzzle has two or more
    solutions, give back the true digit at a cell where two found solutions differ (the first
    such cell in a random cell order); then, while above the target, try taking clues away in
    the reverse of that order, keeping each removal that leaves the solution unique. A removal
    that fails would fail again after later removals (fewer clues never restore uniqueness),
    so a puzzle that ends above the target is minimal: no single given can go. How often the
    target is reached falls with it (measured in the Sudoku builder's docstring).
    """
    solution = random_full_grid(rng)
    cell_order = rng.permutation(81).tolist()
    puzzle = [0] * 81
    for cell in cell_order[:target_clues]:
        puzzle[cell] = solution[cell]
    while True:
        found, stats = solve(puzzle, limit=2)
        if len(found) == 1:
            break
        first, second = found
        cell = next(c for c in cell_order if first[c] != second[c])
        puzzle[cell] = solution[cell]
    clues = sum(1 for d in puzzle if d)
    if clues > target_clues:
        for cell in reversed(cell_order):  # given-back clues follow the starting ones: try them first
            if not puzzle[cell]:
                continue
            digit, puzzle[cell] = puzzle[cell], 0
            found, removal_stats = solve(puzzle, limit=2)
            if len(found) == 1:
                stats, clues = removal_stats, clues - 1
                if clues <= target_clues:
                    break
            else:
                puzzle[cell] = digit
    if max_clues is not None and clues > max_clues:
        return None
    return puzzle, solution, stats.dead_ends
