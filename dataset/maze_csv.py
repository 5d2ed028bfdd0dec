"""Reading mazes from the public Maze-Hard CSV format (sapientinc/maze-30x30-hard-1k, as the
HRM reference's builder reads it).

A header row naming the columns `source,question,answer,rating` (any order, extra columns
ignored), then one maze a row: `question` is n*n characters, row-major, '#' wall, ' ' open,
'S' start, 'G' goal; `answer` is the same grid with the shortest path's cells between start
and goal as 'o'; `rating` an integer (kept, not interpreted). Every row must have the same n.
A row is checked: characters, one start and one goal, the answer equal to the question except
open cells marked 'o', and those marks a valid path from start to goal
(dataset/maze_solver.py: path_problems).
Tokens: the characters "# SGo" -> 1..5 (dataset/maze_solver.py).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import DatasetError
from dataset.common import puzzle_csv_columns
from dataset.maze_solver import CSV_CHARS, GOAL, MAX_SIZE, MIN_SIZE, OPEN, PATH, START

CHAR_TOKENS = np.zeros(256, dtype=np.uint8)  # byte -> token, 0 = not a maze character
CHAR_TOKENS[np.frombuffer(CSV_CHARS.encode(), dtype=np.uint8)] = np.arange(1, len(CSV_CHARS) + 1)


@dataclass
class CSVMazes:
    """Valid rows of one file. inputs/labels (N, n, n) uint8 tokens; ratings (N,) int64;
    line_numbers (N,) the rows' lines in the file (header = line 1)."""

    inputs: np.ndarray
    labels: np.ndarray
    ratings: np.ndarray
    line_numbers: np.ndarray
    invalid_rows: int

    @property
    def size(self) -> int:
        return int(self.inputs.shape[1])


def row_problem(question: str, answer: str, size: int) -> str | None:
    """What is wrong with one row's question and answer (None: nothing)."""
    from dataset.maze_solver import path_problems

    if not (question.isascii() and answer.isascii()):
        return f"question and answer may hold only the characters {CSV_CHARS!r}"
    q = CHAR_TOKENS[np.frombuffer(question.encode(), dtype=np.uint8)]
    a = CHAR_TOKENS[np.frombuffer(answer.encode(), dtype=np.uint8)]
    if np.any(q == 0) or np.any(q == PATH):
        return "question may hold only '#', ' ', 'S' and 'G'"
    if np.any(a == 0):
        return f"answer may hold only the characters {CSV_CHARS!r}"
    if np.count_nonzero(q == START) != 1 or np.count_nonzero(q == GOAL) != 1:
        return "question must hold exactly one 'S' and one 'G'"
    if np.any((a != q) & ~((q == OPEN) & (a == PATH))):
        return "answer differs from question other than by marking open cells 'o'"
    problem = path_problems(q.reshape(1, size, size), a.reshape(1, size, size))[0]
    return f"answer's path is not valid: {problem}" if problem else None


def read_maze_csv(path: Path, flag: str, skip_invalid: bool) -> CSVMazes:
    """Load and check every row; a bad row raises DatasetError naming `flag`, the file and the
    line, unless `skip_invalid`, in which case it is dropped and counted."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{flag} {path}: " + ("is not a regular file" if path.exists() else "file not found"))

    def fail(line: int, message: str) -> DatasetError:
        hint = "" if line == 1 else "; pass --skip-invalid to skip bad rows"
        return DatasetError(f"{flag} {path}, line {line}: {message}{hint}")

    inputs, labels, ratings, lines = [], [], [], []
    invalid = 0
    size = None
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        try:
            q_col, a_col, r_col, width = puzzle_csv_columns(reader, fail)
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                problem = None
                if len(row) != width:
                    problem = f"has {len(row)} fields, the header has {width}"
                else:
                    question, answer = row[q_col], row[a_col]  # not stripped: ' ' is an open cell
                    side = math.isqrt(len(question))
                    if len(answer) != len(question) or side * side != len(question):
                        problem = (f"question has {len(question)} and answer {len(answer)} characters; expected "
                                   "n*n each")
                    elif not MIN_SIZE <= side <= MAX_SIZE:
                        problem = f"a {side}x{side} maze; expected n in {MIN_SIZE}..{MAX_SIZE}"
                    elif size is not None and side != size:
                        problem = f"a {side}x{side} maze, but the rows before are {size}x{size}"
                    else:
                        problem = row_problem(question, answer, side)
                        try:
                            rating = int(row[r_col])
                        except ValueError:
                            rating = -1
                        if problem is None and not 0 <= rating < 2**62:
                            problem = f"rating {row[r_col][:40]!r} is not an integer in 0..2**62"
                if problem is not None:
                    if not skip_invalid:
                        raise fail(line, problem)
                    invalid += 1
                    continue
                size = side
                inputs.append(CHAR_TOKENS[np.frombuffer(question.encode(), dtype=np.uint8)].reshape(side, side))
                labels.append(CHAR_TOKENS[np.frombuffer(answer.encode(), dtype=np.uint8)].reshape(side, side))
                ratings.append(rating)
                lines.append(line)
        except csv.Error as exc:
            raise DatasetError(f"{flag} {path}, line {reader.line_num}: unreadable CSV ({exc})") from exc
    if not inputs:
        raise DatasetError(f"{flag} {path}: no valid maze rows")
    return CSVMazes(inputs=np.stack(inputs), labels=np.stack(labels), ratings=np.asarray(ratings, dtype=np.int64),
                    line_numbers=np.asarray(lines, dtype=np.int64), invalid_rows=invalid)
