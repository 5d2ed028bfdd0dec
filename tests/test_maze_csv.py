"""The Maze-Hard CSV reader (source,question,answer,rating; '#', ' ', 'S', 'G', 'o') and the
builder's import: good files load, bad rows are one line naming file and line."""

import numpy as np
import pytest

from conftest import assert_one_line_error, run_module
from dataset.build_maze_dataset import MazeBuildConfig, build_maze_dataset
from core.errors import DatasetError
from dataset.common import load_split
from dataset.maze_csv import read_maze_csv
from dataset.maze_solver import CSV_CHARS, generate_maze


def as_text(tokens):
    return "".join(CSV_CHARS[t - 1] for t in np.asarray(tokens).reshape(-1))


def mazes(count, seed=0, size=7):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        found = generate_maze(rng, size, 4, 0.0)
        if found is not None:
            out.append(found)
    return out


def write_csv(path, rows, header="source,question,answer,rating"):
    path.write_text(header + "\n" + "".join(f"{r}\n" for r in rows))
    return path


def good_rows(count, seed=0, size=7):
    return [f"gen,{as_text(q)},{as_text(a)},{n}" for q, a, n in mazes(count, seed, size)]


def test_reads_a_good_file(tmp_path):
    found = mazes(5)
    path = write_csv(tmp_path / "m.csv", good_rows(5))
    file = read_maze_csv(path, "--source-csv", False)
    assert file.size == 7 and file.invalid_rows == 0 and file.line_numbers.tolist() == [2, 3, 4, 5, 6]
    assert np.array_equal(file.inputs, np.stack([q for q, _, _ in found]))
    assert np.array_equal(file.labels, np.stack([a for _, a, _ in found]))


def test_import_builds_a_dataset(tmp_path):
    train = write_csv(tmp_path / "train.csv", good_rows(6, seed=0))
    test = write_csv(tmp_path / "test.csv", good_rows(3, seed=1))
    out = build_maze_dataset(MazeBuildConfig(output_dir=tmp_path / "d", size=7, source_csv=train, source_test_csv=test,
                                             subsample_size=4, num_aug=7, progress=False))
    meta, sets = load_split(out, "train")
    assert meta.total_groups == 4 and sets["all"].inputs.shape == (32, 49) and meta.source == "csv"
    assert load_split(out, "test")[0].total_groups == 3
    with pytest.raises(DatasetError, match="pass --size 7"):
        build_maze_dataset(MazeBuildConfig(output_dir=tmp_path / "e", size=9, source_csv=train, source_test_csv=test,
                                           progress=False))


def corrupt(row, **changes):
    source, question, answer, rating = row.split(",")
    values = {"question": question, "answer": answer, "rating": rating, **changes}
    return f"{source},{values['question']},{values['answer']},{values['rating']}"


ROW = good_rows(1)[0]
Q, A = ROW.split(",")[1:3]


@pytest.mark.parametrize("rows, header, culprit", [
    ([], "source,question,rating", "line 1: header lacks column(s) ['answer']"),
    ([corrupt(ROW, question=Q[:-1])], None, "line 2: question has 48 and answer 49 characters"),
    ([corrupt(ROW, question=Q.replace("S", " "))], None, "line 2: question must hold exactly one 'S'"),
    ([corrupt(ROW, question=Q.replace("#", "x", 1))], None, "line 2: question may hold only"),
    ([corrupt(ROW, answer=A.replace("o", " ", 1))], None, "line 2: answer's path is not valid"),
    ([corrupt(ROW, answer=A.replace("#", "o", 1))], None, "line 2: answer differs from question"),
    ([corrupt(ROW, rating="hard")], None, "line 2: rating 'hard'"),
    ([ROW, good_rows(1, size=9)[0]], None, "line 3: a 9x9 maze, but the rows before are 7x7"),
    ([ROW + ",extra"], None, "line 2: has 5 fields"),
])
def test_bad_rows_name_file_and_line(tmp_path, rows, header, culprit):
    path = write_csv(tmp_path / "m.csv", rows, *(header,) if header else ())
    with pytest.raises(DatasetError) as info:
        read_maze_csv(path, "--source-csv", False)
    message = str(info.value)
    assert message.startswith(f"--source-csv {path}") and culprit in message and "\n" not in message, message


def test_skip_invalid_counts(tmp_path):
    path = write_csv(tmp_path / "m.csv", [ROW, corrupt(ROW, rating="x"), ROW])
    file = read_maze_csv(path, "--source-csv", True)
    assert file.invalid_rows == 1 and file.line_numbers.tolist() == [2, 4]


def test_import_not_shortest_is_one_line(tmp_path):
    # A maze with a loop where the file's path goes the long way round: valid, not shortest.
    question = "S.....#" "#####.#" "#.....#" "#.###.#" "#.#...#" "#.#.###" "#.....G"
    answer = "Sooooo#" "#####o#" "#ooooo#" "#o###.#" "#o#...#" "#o#.###" "#oooooG"
    row = f"x,{question.replace('.', ' ')},{answer.replace('.', ' ')},0"
    train = write_csv(tmp_path / "train.csv", [row])
    test = write_csv(tmp_path / "test.csv", good_rows(1))
    result = run_module("-m", "dataset.build_maze_dataset", "--output-dir", str(tmp_path / "d"), "--size", "7",
                        "--source-csv", str(train), "--source-test-csv", str(test), "--no-progress")
    assert_one_line_error(result, f"--source-csv {train}, line 2", "not a shortest one")
    assert not (tmp_path / "d").exists()


def test_val_size_with_an_import_is_refused(tmp_path):
    """The public files have no rows beyond train and test: --val-size says so instead of
    writing a val/ that overlaps them."""
    from pydantic import ValidationError

    train = write_csv(tmp_path / "train.csv", good_rows(3))
    with pytest.raises(ValidationError, match="--val-size: not with --source-csv"):
        MazeBuildConfig(output_dir=tmp_path / "d", size=7, source_csv=train, source_test_csv=train, val_size=2)
