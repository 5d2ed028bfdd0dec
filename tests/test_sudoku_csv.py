import numpy as np
import pytest

from conftest import assert_one_line_error, run_module
from dataset.build_sudoku_dataset import SudokuBuildConfig, build_sudoku_dataset
from core.errors import DatasetError
from dataset.common import load_split
from dataset.sudoku_solver import generate_puzzle

HEADER = "source,question,answer,rating\n"


@pytest.fixture(scope="module")
def rows():
    """20 valid sudoku-extreme rows (question, answer, rating); even rows use '.', odd '0'."""
    out = []
    for k in range(20):
        puzzle, solution, _ = generate_puzzle(np.random.default_rng(k), 24, 30)
        blank = "." if k % 2 == 0 else "0"
        question = "".join(str(d) if d else blank for d in puzzle)
        out.append((question, "".join(map(str, solution)), k % 5))
    return out


def write_csv(path, rows, extra_lines=()):
    """Rows as CSV; `extra_lines` are (position, raw line) inserted before row `position`."""
    lines = [f"src{i},{q},{a},{r}\n" for i, (q, a, r) in enumerate(rows)]
    for position, raw in sorted(extra_lines, reverse=True):
        lines.insert(position, raw + "\n")
    path.write_text(HEADER + "".join(lines))
    return path


def build(out, **kwargs):
    args = dict(output_dir=out, num_aug=2, num_test=5, seed=0, progress=False)
    args.update(kwargs)
    return build_sudoku_dataset(SudokuBuildConfig(**args))


def as_rows(split):
    """(inputs, labels) tokens of the originals back to (question, answer) strings ('.' blanks)."""
    s = split["all"]
    firsts = s.group_indices[:-1]
    return {
        ("".join("." if t == 1 else str(t - 1) for t in s.inputs[i]), "".join(str(t - 1) for t in s.labels[i]))
        for i in firsts
    }


def test_import_holds_out_test_rows_and_keeps_the_rest(tmp_path, rows):
    out = build(tmp_path / "d", source_csv=write_csv(tmp_path / "train.csv", rows))
    train_meta, train = load_split(out, "train")
    test_meta, test = load_split(out, "test")
    expected = {(q.replace("0", "."), a) for q, a, _ in rows}
    assert len(as_rows(train)) == 15 and len(as_rows(test)) == 5
    assert as_rows(train) | as_rows(test) == expected and not as_rows(train) & as_rows(test)
    assert train["all"].num_examples == 15 * 3 and test["all"].num_examples == 5
    assert train_meta.source == "csv" and train_meta.invalid_rows_skipped == 0 and train_meta.task == "sudoku"
    assert test_meta.rating["min"] >= 0 and test_meta.rating["max"] <= 4


def test_separate_test_file_subsample_and_filters(tmp_path, rows):
    train_csv = write_csv(tmp_path / "train.csv", rows)
    test_csv = write_csv(tmp_path / "test.csv", rows[:7])
    out = build(tmp_path / "d", source_csv=train_csv, source_test_csv=test_csv, num_test=0, subsample_size=6)
    assert len(as_rows(load_split(out, "train")[1])) == 6
    assert len(as_rows(load_split(out, "test")[1])) == 7
    filtered = build(tmp_path / "f", source_csv=train_csv, source_test_csv=test_csv, num_test=0, min_rating=3)
    meta, train = load_split(filtered, "train")
    assert meta.rating["min"] >= 3 and len(as_rows(train)) == sum(1 for *_, r in rows if r >= 3)
    with pytest.raises(DatasetError, match="--subsample-size 50"):
        build(tmp_path / "s", source_csv=train_csv, subsample_size=50)


def _bad_row_cases(rows):
    question, answer, _ = rows[0]
    blank = question.index(".")
    given = next(i for i, ch in enumerate(question) if ch != ".")
    wrong_digit = str(int(answer[given]) % 9 + 1)
    invalid_answer = answer[:blank] + str(int(answer[blank]) % 9 + 1) + answer[blank + 1 :]
    return {
        "length": (f"x,{question[:80]},{answer},1", "expected 81"),
        "contradiction": (f"x,{question[:given]}{wrong_digit}{question[given + 1:]},{answer},1", "contradicts"),
        "invalid_answer": (f"x,{question},{invalid_answer},1", "not a valid Sudoku grid"),
        "non_digit": (f"x,{question[:blank]}x{question[blank + 1:]},{answer},1", "only digits"),
        "rating": (f"x,{question},{answer},hard", "not an integer"),
        "fields": (f"x,{question},{answer}", "fields"),
    }


@pytest.mark.parametrize("kind", ["length", "contradiction", "invalid_answer", "non_digit", "rating", "fields"])
def test_each_bad_row_kind_names_file_and_line(tmp_path, rows, kind):
    raw, reason = _bad_row_cases(rows)[kind]
    path = write_csv(tmp_path / "bad.csv", rows, extra_lines=[(4, raw)])  # header = line 1, so line 6
    with pytest.raises(DatasetError) as info:
        build(tmp_path / "d", source_csv=path)
    message = str(info.value)
    assert "bad.csv" in message and "line 6" in message and reason in message and "\n" not in message
    assert not (tmp_path / "d").exists()


def test_bad_row_on_the_command_line_exits_2_and_writes_nothing(tmp_path, rows):
    raw, _ = _bad_row_cases(rows)["invalid_answer"]
    path = write_csv(tmp_path / "bad.csv", rows, extra_lines=[(10, raw)])
    out = tmp_path / "out"
    result = run_module("-m", "dataset.build_sudoku_dataset", "--output-dir", str(out), "--source-csv", str(path),
                        "--num-test", "5", "--num-aug", "1", "--no-progress")
    assert_one_line_error(result, "line 12", "--skip-invalid")
    assert not out.exists()


def test_skip_invalid_drops_and_counts_bad_rows(tmp_path, rows):
    cases = _bad_row_cases(rows)
    path = write_csv(tmp_path / "bad.csv", rows, extra_lines=[(2 * i, raw) for i, (raw, _) in enumerate(cases.values())])
    out = build(tmp_path / "d", source_csv=path, skip_invalid=True)
    meta, train = load_split(out, "train")
    assert meta.invalid_rows_skipped == len(cases) == 6 and meta.source_rows_valid == 20
    assert len(as_rows(train)) == 15


def test_bad_header_and_missing_file(tmp_path, rows):
    path = tmp_path / "nohead.csv"
    path.write_text("".join(f"{q},{a},{r}\n" for q, a, r in rows))
    with pytest.raises(DatasetError, match="line 1: header lacks"):
        build(tmp_path / "d", source_csv=path)
    with pytest.raises(DatasetError, match="file not found"):
        build(tmp_path / "d", source_csv=tmp_path / "missing.csv")


def test_first_bad_line_is_reported_across_chunks(tmp_path, rows, monkeypatch):
    import dataset.sudoku_csv as sudoku_csv

    monkeypatch.setattr(sudoku_csv, "ROWS_PER_CHUNK", 3)  # rows are checked in bulk, 3 at a time
    cases = _bad_row_cases(rows)
    # An answer error (found by the bulk check) on line 6, a length error (found at once) on line 9.
    path = write_csv(tmp_path / "bad.csv", rows, extra_lines=[(4, cases["invalid_answer"][0]), (6, cases["length"][0])])
    with pytest.raises(DatasetError, match="line 6: answer is not a valid"):
        build(tmp_path / "d", source_csv=path)
    out = build(tmp_path / "ok", source_csv=path, skip_invalid=True)
    assert load_split(out, "train")[0].invalid_rows_skipped == 2
    reference = build(tmp_path / "ref", source_csv=write_csv(tmp_path / "good.csv", rows))
    for split in ("train", "test"):  # chunking changes nothing else
        assert as_rows(load_split(out, split)[1]) == as_rows(load_split(reference, split)[1])
