"""The Maze builder: one shortest path per maze, long paths, determinism, symmetries, the files."""

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, dir_digest, run_in_process, run_module
from dataset.build_maze_dataset import MazeBuildConfig, augment, build_maze_dataset
from dataset.common import load_split
from dataset.maze_solver import (GOAL, OPEN, PATH, START, WALL, bfs_counts, carve_maze, dihedral, generate_maze,
                                 inverse_dihedral)
from dataset.maze_solver import path_problems, shortest_lengths
from evaluators.maze import score_mazes


def build(out, **overrides):
    args = dict(output_dir=out, size=9, num_train=40, num_test=20, num_aug=3, min_path=10, seed=0, progress=False)
    args.update(overrides)
    return build_maze_dataset(MazeBuildConfig(**args))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return build(tmp_path_factory.mktemp("maze") / "small")


def count_shortest_paths(grid, start, goal, limit=3):
    """Independent check: the distance of every cell to the goal by growing sets of cells, then
    a depth-first enumeration of the walks from start that step one closer each move, counted
    up to `limit`."""
    size = grid.shape[0]
    walk = grid != WALL

    def around(cell):
        for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            r, c = cell[0] + dr, cell[1] + dc
            if 0 <= r < size and 0 <= c < size and walk[r, c]:
                yield r, c

    to_goal, frontier, length = {goal: 0}, {goal}, 0
    while frontier:
        length += 1
        frontier = {n for cell in frontier for n in around(cell)} - set(to_goal)
        to_goal.update((cell, length) for cell in frontier)

    def count(cell):
        if cell == goal:
            return 1
        total = 0
        for n in around(cell):
            if to_goal[n] == to_goal[cell] - 1:
                total = min(limit, total + count(n))
        return total

    return count(start), to_goal[start]


def cell_of(grid, token):
    return tuple(int(x) for x in np.argwhere(grid == token)[0])


def test_generated_mazes_have_one_shortest_path_and_label_it():
    rng = np.random.default_rng(3)
    checked = 0
    while checked < 25:
        found = generate_maze(rng, 11, 12, 0.1)  # many loops: ties are common, so uniqueness is really tested
        if found is None:
            continue
        inputs, labels, length = found
        start, goal = cell_of(inputs, START), cell_of(inputs, GOAL)
        paths, shortest = count_shortest_paths(inputs, start, goal)
        assert paths == 1 and shortest == length >= 12
        assert np.count_nonzero(labels == PATH) == length - 1
        assert path_problems(inputs[None], labels[None]) == [None]
        checked += 1


def test_bfs_counts_see_ties():
    grid = np.full((3, 3), OPEN, dtype=np.uint8)  # corner to corner of an open square: 6 shortest paths
    dist, count = bfs_counts(grid, (0, 0))
    assert dist[2, 2] == 4 and count[2, 2] == 2  # capped at 2
    grid[1, 1] = WALL  # two ways round the pillar
    assert bfs_counts(grid, (0, 0))[1][2, 2] == 2
    grid[0, 1] = WALL  # one way left
    dist, count = bfs_counts(grid, (0, 0))
    assert (dist[2, 2], count[2, 2]) == (4, 1)


def test_bfs_agrees_with_csgraph():
    rng = np.random.default_rng(1)
    mazes, lengths = [], []
    while len(mazes) < 40:
        found = generate_maze(rng, 13, 1, 0.2)
        if found is not None:
            mazes.append(found[0])
            lengths.append(found[2])
    assert np.array_equal(shortest_lengths(np.stack(mazes)), lengths)


def test_carving_without_loops_is_a_tree():
    grid = carve_maze(np.random.default_rng(0), 15, 0.0)
    open_cells = int(np.count_nonzero(grid == OPEN))
    right = np.count_nonzero((grid[:, :-1] == OPEN) & (grid[:, 1:] == OPEN))
    down = np.count_nonzero((grid[:-1] == OPEN) & (grid[1:] == OPEN))
    assert right + down == open_cells - 1  # connected (every cell reached) with no cycle
    dist, _ = bfs_counts(grid, (0, 0))
    assert np.all(dist[grid == OPEN] >= 0)


@pytest.mark.parametrize("k", range(8))
def test_symmetries_keep_paths_valid_and_invert(small, k):
    _, sets = load_split(small, "test")
    inputs = sets["all"].inputs.reshape(-1, 9, 9)
    labels = sets["all"].labels.reshape(-1, 9, 9)
    moved_inputs, moved_labels = dihedral(inputs, k), dihedral(labels, k)
    assert all(p is None for p in path_problems(moved_inputs, moved_labels))
    assert np.array_equal(shortest_lengths(moved_inputs), shortest_lengths(inputs))
    back = inverse_dihedral(k)
    assert np.array_equal(dihedral(moved_inputs, back), inputs) and np.array_equal(dihedral(moved_labels, back), labels)


def test_the_eight_symmetries_are_distinct():
    grid = np.arange(16).reshape(4, 4)
    images = {dihedral(grid, k).tobytes() for k in range(8)}
    assert len(images) == 8
    with pytest.raises(ValueError, match="0..7"):
        dihedral(grid, 8)


def test_augment_draws_distinct_non_identity_symmetries():
    rng = np.random.default_rng(0)
    grids = np.stack([generate_maze(np.random.default_rng(s), 9, 1, 0.0)[0] for s in range(5)])
    out_inputs, out_labels, ids = augment(rng, grids, grids, 7)
    assert ids.shape == (5, 7) and all(sorted(row) == list(range(1, 8)) for row in ids.tolist())
    for i in range(5):
        for a in range(7):
            assert np.array_equal(out_inputs[i, a], dihedral(grids[i], int(ids[i, a])))


def test_dataset_files(small):
    meta, sets = load_split(small, "train")
    arrays = sets["all"]
    assert (meta.vocab_size, meta.seq_len, meta.total_groups, meta.task) == (6, 81, 40, "maze")
    assert arrays.inputs.shape == (40 * 4, 81) and np.array_equal(arrays.group_indices, np.arange(41) * 4)
    assert meta.path_length["min"] >= 10
    m = score_mazes(arrays.inputs, arrays.labels, arrays.labels)
    assert m == {"exact_accuracy": 1.0, "valid_path_rate": 1.0, "optimal_path_rate": 1.0, "maze_kept_rate": 1.0}
    # Originals are distinct, also across splits.
    test_meta, test_sets = load_split(small, "test")
    originals = {row.tobytes() for row in arrays.inputs[::4]} | {row.tobytes() for row in test_sets["all"].inputs}
    assert len(originals) == 60
    lengths = np.load(small / "test" / "all__path_lengths.npy")
    assert np.array_equal(lengths, shortest_lengths(test_sets["all"].inputs))
    record = json.loads((small / "train" / "dataset.json").read_text())["build_args"]
    assert record["size"] == 9 and record["min_path"] == 10 and "output_dir" not in record


def test_same_seed_same_bytes_other_seed_other_mazes(tmp_path, small):
    again = build(tmp_path / "again")
    assert dir_digest(again) == dir_digest(small)
    other = build(tmp_path / "other", seed=1)
    assert dir_digest(other) != dir_digest(small)


def test_overwrite_goes_through_the_guard(tmp_path):
    out = build(tmp_path / "d", num_train=4, num_test=2)
    from core.errors import DatasetError

    with pytest.raises(DatasetError, match="overwrite"):
        build(out, num_train=4, num_test=2)
    build(out, num_train=5, num_test=2, overwrite=True)
    assert load_split(out, "train")[0].total_groups == 5
    stranger = tmp_path / "mine"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("not a dataset")
    with pytest.raises(DatasetError):
        build(stranger, num_train=4, num_test=2, overwrite=True)
    assert (stranger / "notes.txt").read_text() == "not a dataset"


@pytest.mark.parametrize("flags, culprit", [
    (["--size", "2"], "--size"),
    (["--num-aug", "8"], "--num-aug"),
    (["--min-path", "500", "--size", "9"], "--min-path 500"),
    (["--loop-fraction", "0.9"], "--loop-fraction"),
    (["--subsample-size", "3"], "--subsample-size needs --source-csv"),
    (["--source-csv", "x.csv"], "--source-test-csv"),
])
def test_bad_flags_one_line(tmp_path, flags, culprit):
    result = run_in_process("-m", "dataset.build_maze_dataset", "--output-dir", str(tmp_path / "d"), "--no-progress",
                            *flags)
    assert_one_line_error(result, culprit)
    assert not (tmp_path / "d").exists()


def test_unreachable_length_is_one_line(tmp_path):
    # 30 moves is more than a loop-free 5x5 maze's 9 cells and 8 passages allow... but under the
    # flag bound; the generator gives up after its tries with a line naming the flags.
    result = run_module("-m", "dataset.build_maze_dataset", "--output-dir", str(tmp_path / "d"), "--no-progress",
                        "--size", "5", "--min-path", "17", "--num-train", "1", "--num-test", "1")
    assert_one_line_error(result, "--min-path 17", "--size 5")
