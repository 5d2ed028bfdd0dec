"""Maze scoring on known right and wrong answers; text round trip; the picture; one-line errors."""

import numpy as np
import pytest
import torch

from core.errors import InputError
from dataset.common import DatasetMetadata
from dataset.maze_solver import PATH, VOCAB_SIZE
from evaluators.maze import (MazeEvaluator, maze_text, parse_maze_text, path_problems, render_maze, score_mazes,
                             shortest_lengths)

# A 7x7 maze with one shortest path (S to G along the top and down the right: 10 moves) and a
# longer way round through the middle.
MAZE = """\
S.....#
#####.#
#.....#
#.###.#
#.#...#
#.#.###
#.....G"""
ANSWER = """\
Sooooo#
#####o#
#....o#
#.###o#
#.#ooo#
#.#o###
#..oooG"""
# The long way round: through the middle and along the bottom (a valid path, 14 moves, not shortest).
DETOUR = """\
Sooooo#
#####o#
#ooooo#
#o###.#
#o#...#
#o#.###
#oooooG"""


def grid(text, allow_path=True):
    return parse_maze_text(text, "test", allow_path=allow_path)[0]


def score(answer):
    return score_mazes(grid(MAZE)[None], grid(answer)[None], grid(ANSWER)[None])


def test_exact_answer():
    assert score(ANSWER) == {"exact_accuracy": 1.0, "valid_path_rate": 1.0, "optimal_path_rate": 1.0,
                             "maze_kept_rate": 1.0}
    assert shortest_lengths(grid(MAZE)[None]).tolist() == [int(np.count_nonzero(grid(ANSWER) == PATH)) + 1]


def test_detour_is_valid_not_optimal():
    assert score(DETOUR) == {"exact_accuracy": 0.0, "valid_path_rate": 1.0, "optimal_path_rate": 0.0,
                             "maze_kept_rate": 1.0}


def test_wall_crossing():
    crossing = ANSWER.replace("#.#ooo#\n#.#o###", "#.#ooo#\n#.#oo##")  # an extra cell on a wall
    bad = grid(crossing)
    assert score(crossing)["maze_kept_rate"] == 0.0 and score(crossing)["valid_path_rate"] == 0.0
    assert "cell (5, 4) is '#'" in path_problems(grid(MAZE)[None], bad[None])[0]


def test_disconnected_and_broken_paths():
    gap = ANSWER.replace("Sooooo#", "Soo.oo#")  # a hole: two dead ends
    assert "path neighbours, expected 2" in path_problems(grid(MAZE)[None], grid(gap)[None])[0]
    assert score(gap)["valid_path_rate"] == 0.0
    # The right path plus a separate ring of path cells: every degree is right, two pieces.
    ring = ".......\n.ooo...\n.o.o...\n.ooo...\n.......\nSoooooG\n......."
    assert path_problems(grid(ring.replace("o", "."))[None], grid(ring)[None]) == ["the path falls into 2 pieces"]
    empty = grid(MAZE, allow_path=False)  # no path at all: start has no neighbour
    assert "start at (0, 0) has 0 path neighbours" in path_problems(grid(MAZE)[None], empty[None])[0]


def test_path_touching_itself_is_not_valid():
    maze = grid("S...\n....\n....\n...G", allow_path=False)
    answer = grid("Soo.\n..o.\n.oo.\n.ooG")  # a walk whose turns sit side by side (a 2x2 block)
    assert "expected 2" in path_problems(maze[None], answer[None])[0]
    straight = grid("Sooo\n...o\n...o\n...G")
    assert path_problems(maze[None], straight[None]) == [None]
    assert score_mazes(maze[None], straight[None])["optimal_path_rate"] == 1.0


def test_unreachable_goal_length():
    maze = grid("S.#\n..#\n##G", allow_path=False)
    assert shortest_lengths(maze[None]).tolist() == [-1]


def test_text_round_trip():
    for text in (MAZE, ANSWER):
        assert maze_text(grid(text)) == text
    two = parse_maze_text(MAZE + "\n\n" + MAZE.replace(".", " ") + "\n", "x")
    assert two.shape == (2, 7, 7) and np.array_equal(two[0], two[1])


@pytest.mark.parametrize("text, size, allow_path, culprit", [
    ("", None, False, "no maze found"),
    (MAZE.replace("S", "."), None, False, "0 'S' cells"),
    (MAZE.replace("#.....#", "#..G..#", 1), None, False, "2 'G' cells"),
    (MAZE.replace("S.....#", "S....x#"), None, False, "line 1, column 6: 'x'"),
    (ANSWER, None, False, "'o' is not a maze character"),
    (MAZE.replace("#.#...#", "#.#..#"), None, False, "line 5: 6 characters, expected 7"),
    (MAZE, 9, False, "has 7 rows, expected 9 (the checkpoint's size)"),
    ("S.\n.G", None, False, "expected a maze of 3.."),
])
def test_parse_errors_are_one_line(text, size, allow_path, culprit):
    with pytest.raises(InputError) as info:
        parse_maze_text(text, "--input m.txt", size, allow_path)
    message = str(info.value)
    assert message.startswith("--input m.txt") and "\n" not in message and culprit in message, message


def test_bad_arrays_name_the_argument():
    good = grid(MAZE)[None]
    with pytest.raises(ValueError, match="inputs: maze 0 has 0 start"):
        score_mazes(np.where(good == 3, 2, good), good)
    with pytest.raises(ValueError, match="predicted_labels"):
        score_mazes(good, good[:, :6, :6])
    with pytest.raises(ValueError, match="not a square"):
        score_mazes(good.reshape(1, 49)[:, :48], good.reshape(1, 49)[:, :48])
    with pytest.raises(ValueError, match="tokens must lie"):
        score_mazes(good + 5, good)


def metadata(seq_len=49, vocab=VOCAB_SIZE, task="maze"):
    return DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab, seq_len=seq_len,
                           num_puzzle_identifiers=1, total_groups=1, mean_puzzle_examples=1.0, total_puzzles=1,
                           sets=["all"], task=task)


def test_evaluator_protocol(tmp_path):
    evaluator = MazeEvaluator(metadata())
    inputs = torch.from_numpy(np.stack([grid(MAZE), grid(MAZE)]).reshape(2, 49).astype(np.int64))
    labels = torch.from_numpy(np.stack([grid(ANSWER), grid(ANSWER)]).reshape(2, 49).astype(np.int64))
    preds = torch.from_numpy(np.stack([grid(ANSWER), grid(DETOUR)]).reshape(2, 49).astype(np.int64))
    evaluator.begin_eval()
    evaluator.update_batch({"inputs": inputs[:1], "labels": labels[:1]}, {"preds": preds[:1]})
    evaluator.update_batch({"inputs": inputs[1:], "labels": labels[1:]}, {"preds": preds[1:]})
    result = evaluator.result(tmp_path)
    assert result == {"exact_accuracy": 0.5, "valid_path_rate": 1.0, "optimal_path_rate": 0.5, "maze_kept_rate": 1.0}
    assert set(result) == evaluator.metric_names()
    assert (tmp_path / "maze_predictions.npz").is_file()
    with pytest.raises(ValueError, match="seq_len=50"):
        MazeEvaluator(metadata(seq_len=50))
    with pytest.raises(ValueError, match="sudoku"):
        MazeEvaluator(metadata(task="sudoku"))


def test_picture(tmp_path):
    from evaluators.render import save

    fig = render_maze({"task": "maze", "n": 7}, grid(MAZE).reshape(-1), grid(ANSWER).reshape(-1),
                      grid(DETOUR).reshape(-1), title="t")
    assert "valid path" in fig.axes[0].get_title()
    path = save(fig, tmp_path / "m.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_symmetries_map_answers_back_and_check_scores_paths():
    """Each drawn symmetry is a distinct non-identity one; a maze's shortest path moved by it
    is the moved maze's shortest path, and mapping it back gives the original; check_answer
    prefers the shortest path, and refuses a broken one."""
    from dataset.maze_solver import generate_maze
    from evaluators.tasks import get_task

    task = get_task("maze")
    rng = np.random.default_rng(3)
    found = [generate_maze(rng, 9, 6, 0.0) for _ in range(20)]
    inputs = np.stack([f[0] for f in found if f is not None]).reshape(-1, 81).astype(np.int64)
    labels = np.stack([f[1] for f in found if f is not None]).reshape(-1, 81).astype(np.int64)
    facts = {"task": "maze", "n": 9, "seq_len": 81, "vocab_size": VOCAB_SIZE}
    symmetries = task.symmetries(facts, np.random.default_rng(0), 10)
    assert len(symmetries) == 7 and len({s.name for s in symmetries}) == 7
    for s in symmetries:
        moved_in, moved_lab = s.augment(inputs), s.augment(labels)
        assert not np.array_equal(moved_in, inputs)
        assert score_mazes(moved_in, moved_lab, moved_lab)["optimal_path_rate"] == 1.0
        assert np.array_equal(s.map_back(moved_lab), labels)
    penalties = task.check_answer(facts, inputs, labels)
    assert np.array_equal(penalties, np.count_nonzero(labels == PATH, axis=1) + 1.0)
    broken = labels.copy()
    broken[broken == PATH] = 2  # no path at all
    assert np.all(np.isinf(task.check_answer(facts, inputs, broken)))
