"""Reading Sudoku puzzles from the public sudoku-extreme CSV format.

A header row naming the columns `source,question,answer,rating` (any order, extra columns
ignored), then one puzzle a row: `question` is 81 characters, row-major, '1'..'9' for a given
and '.' or '0' for a blank; `answer` is the 81-digit solution; `rating` an integer difficulty
(for sudoku-extreme: backtracks of the tdoku solver). Rows are checked in bulk with numpy so
that files of millions of rows load in seconds.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from core.errors import DatasetError
from dataset.common import puzzle_csv_columns
from dataset.sudoku_solver import UNITS

UNIT_CELLS = np.array(UNITS, dtype=np.int64)  # (27, 9)
ROWS_PER_CHUNK = 65536


@dataclass
class CSVPuzzles:
    """Valid rows of one file. puzzles/solutions (N, 81) uint8 digits (0 = blank in puzzles);
    ratings (N,) int64; line_numbers (N,) the rows' lines in the file (header = line 1)."""

    puzzles: np.ndarray
    solutions: np.ndarray
    ratings: np.ndarray
    line_numbers: np.ndarray
    invalid_rows: int


def _digits(texts: list[str]) -> np.ndarray:
    """81-character ASCII strings -> (N, 81) uint8 character codes."""
    return np.frombuffer("".join(texts).encode("ascii"), dtype=np.uint8).reshape(len(texts), 81)


def _bulk_problems(questions: list[str], answers: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checks rows whose fields are already 81 ASCII characters.

    Returns puzzles (M, 81), solutions (M, 81) as digits and a (M,) array of problem messages
    ("" = valid), checked in the order: question characters, answer characters, a given that
    contradicts the answer, an answer that is not a valid grid."""
    problems = np.full(len(questions), "", dtype=object)
    puzzles = np.zeros((len(questions), 81), dtype=np.uint8)
    solutions = np.zeros((len(questions), 81), dtype=np.uint8)
    for lo in range(0, len(questions), ROWS_PER_CHUNK):
        hi = min(lo + ROWS_PER_CHUNK, len(questions))
        question_codes, answer_codes = _digits(questions[lo:hi]), _digits(answers[lo:hi])
        is_blank = question_codes == ord(".")
        bad_question = ~np.all(is_blank | ((question_codes >= ord("0")) & (question_codes <= ord("9"))), axis=1)
        bad_answer = ~np.all((answer_codes >= ord("1")) & (answer_codes <= ord("9")), axis=1)
        puzzle = np.where(is_blank, 0, question_codes.astype(np.int16) - ord("0")).clip(0, 9).astype(np.uint8)
        solution = (answer_codes.astype(np.int16) - ord("0")).clip(0, 9).astype(np.uint8)
        contradicts = np.any((puzzle > 0) & (puzzle != solution), axis=1)
        unit_masks = np.bitwise_or.reduce(np.left_shift(1, solution[:, UNIT_CELLS].astype(np.int64)), axis=2)  # (M, 27)
        not_a_grid = ~np.all(unit_masks == 0x3FE, axis=1)  # digits 1..9 -> bits 1..9
        chunk = problems[lo:hi]
        chunk[not_a_grid] = "answer is not a valid Sudoku grid (a row, column or box repeats a digit)"
        chunk[contradicts] = "a given in question contradicts answer"
        chunk[bad_answer] = "answer must be 81 digits 1-9"
        chunk[bad_question] = "question may hold only digits 1-9 and '.' or '0' for blanks"
        puzzles[lo:hi], solutions[lo:hi] = puzzle, solution
    return puzzles, solutions, problems


def _parse_rating(text: str) -> Optional[int]:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if 0 <= value < 2**62 else None


def read_sudoku_csv(path: Path, flag: str, skip_invalid: bool) -> CSVPuzzles:
    """Load and check every row; a bad row raises DatasetError naming `flag`, the file and the
    line, unless `skip_invalid`, in which case it is dropped and counted. Rows are converted
    to digit arrays a chunk at a time, so memory holds arrays, not millions of strings."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{flag} {path}: file not found")

    def fail(line: int, message: str) -> DatasetError:
        hint = "" if line == 1 else "; pass --skip-invalid to skip bad rows"
        return DatasetError(f"{flag} {path}, line {line}: {message}{hint}")

    problems: list[tuple[int, str]] = []  # (line, message) of every bad row
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    questions: list[str] = []
    answers: list[str] = []
    ratings: list[int] = []
    lines: list[int] = []

    def flush() -> None:
        """Check the pending rows in bulk and keep the valid ones."""
        puzzles, solutions, messages = _bulk_problems(questions, answers)
        line_numbers = np.asarray(lines, dtype=np.int64)
        bad = np.flatnonzero(messages != "")
        problems.extend((int(line_numbers[i]), str(messages[i])) for i in bad)
        if bad.size and not skip_invalid:
            raise fail(*min(problems))
        good = messages == ""
        kept.append((puzzles[good], solutions[good], np.asarray(ratings, dtype=np.int64)[good], line_numbers[good]))
        for pending in (questions, answers, ratings, lines):
            pending.clear()

    # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column's name.
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        try:
            q_col, a_col, r_col, width = puzzle_csv_columns(reader, fail)
            for row in reader:
                line = reader.line_num
                problem = None
                if not row:
                    continue  # blank line
                if len(row) != width:
                    problem = f"has {len(row)} fields, the header has {width}"
                else:
                    question, answer = row[q_col].strip(), row[a_col].strip()
                    if len(question) != 81 or len(answer) != 81:
                        problem = f"question has {len(question)} and answer {len(answer)} characters, expected 81 each"
                    elif not (question.isascii() and answer.isascii()):
                        problem = "question and answer may hold only digits and '.'"
                    elif (rating := _parse_rating(row[r_col])) is None:
                        problem = f"rating {row[r_col][:40]!r} is not an integer in 0..2**62"
                if problem is not None:
                    if not skip_invalid:
                        flush()  # a pending row may be bad too, and it comes first
                        raise fail(line, problem)
                    problems.append((line, problem))
                    continue
                questions.append(question)
                answers.append(answer)
                ratings.append(rating)
                lines.append(line)
                if len(questions) == ROWS_PER_CHUNK:
                    flush()
        except csv.Error as exc:  # e.g. a field over csv's size limit: the rest of the file can't be trusted
            raise DatasetError(f"{flag} {path}, line {reader.line_num}: unreadable CSV ({exc})") from exc
    flush()
    puzzles, solutions, ratings_array, line_numbers = (np.concatenate(parts) for parts in zip(*kept))
    return CSVPuzzles(puzzles=puzzles, solutions=solutions, ratings=ratings_array, line_numbers=line_numbers,
                      invalid_rows=len(problems))
