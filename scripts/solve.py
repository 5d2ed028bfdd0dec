"""Apply a trained model to your own instances.

    python scripts/solve.py --checkpoint runs/trm-lsa-cpu/<run> --input costs.csv     # or costs.npy, or - (stdin)
    python scripts/solve.py --checkpoint exports/sudoku --input puzzles.txt
    echo "1a3f+ff" | python scripts/solve.py --checkpoint runs/trm-arith/<run> --input -

The task comes from the checkpoint (or exported directory, scripts/export.py). Inputs:
  lsa     cost matrices as CSV (rows of comma- or space-separated integers, matrices separated
          by a blank line) or .npy of shape (n, n) or (N, n, n); n and the cost range 1..max_cost
          must be the checkpoint's
  sudoku  one puzzle per line, 81 characters: digits 1-9, '.' or '0' for a blank
  arith   one expression per line in the checkpoint's base and operation, e.g. "1a3f+ff"
Each answer is printed readably; the last line is one JSON object: the answers, whether each is
valid, the ACT steps used, and for LSA the cost, scipy's optimal cost and the gap. Input that
does not fit the checkpoint is one line on stderr, exit code 2. Lines starting with '#' are skipped.
Input is read up to 16 MiB (a larger file, or an endless one such as /dev/zero, is refused).
"""

from __future__ import annotations

import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Literal, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

import numpy as np  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from core.cli import CLI, run_cli  # noqa: E402
from core.errors import InputError  # noqa: E402
from training.inference import ReadyModel, load_model  # noqa: E402

MAX_INPUT_BYTES = 16 << 20  # far more instances than one call should hold; never an unbounded read
MAX_NPY_HEADER = 10_000  # numpy's own default limit
# One CSV field: a decimal number (integers expected; '3.0' and '3e1' are read, checked below).
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class SolveArgs(BaseModel):
    checkpoint: Path = Field(description="a run (directory, name or wandb id), checkpoint or exported directory")
    runs_dir: Path = Field(Path("runs"), description="where a run name or wandb id given as --checkpoint is looked up")
    input: str = Field(description="the instances: a file, or - for standard input")
    device: str = Field("cpu", description="cpu, cuda, cuda:N")
    halting: Optional[Literal["max_steps", "q_head"]] = Field(
        None, description="which answer counts (default: the run's train.eval_halting)")


def content_lines(text: str) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that are neither blank nor comments."""
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]


# ---------------------------------------------------------------------------------------------
# LSA


def parse_lsa(raw: bytes, where: str, facts: dict[str, Any]) -> np.ndarray:
    """Cost matrices (N, n, n) int64 from .npy bytes or CSV text; checked against the checkpoint."""
    n, max_cost = facts.get("n"), facts.get("max_cost")
    if not isinstance(n, int) or not isinstance(max_cost, int):
        raise InputError(f"--checkpoint: its LSA facts need integer n and max_cost, got n={n!r}, max_cost={max_cost!r}")
    if raw.startswith(b"\x93NUMPY"):
        costs = read_npy(raw, where)
        costs = costs[None] if costs.ndim == 2 else costs
        if costs.ndim != 3:
            raise InputError(f"{where}: expected an array of shape (n, n) or (N, n, n), got {costs.shape}")
        matrices = [(f"matrix {i + 1}", m) for i, m in enumerate(costs)]
    else:
        blocks, block = [], []
        for number, line in enumerate(raw.decode(errors="replace").splitlines() + [""], 1):
            if line.strip().startswith("#"):
                continue
            if line.strip():
                block.append((number, line))
            elif block:
                blocks.append(block)
                block = []
        matrices = []
        for rows in blocks:
            values = [csv_row(line, number, where) for number, line in rows]
            if len({len(v) for v in values}) != 1:
                raise InputError(f"{where}: lines {rows[0][0]}-{rows[-1][0]}: rows of different lengths")
            matrices.append((f"matrix at line {rows[0][0]}", np.array(values)))
    if not matrices:
        raise InputError(f"{where}: no cost matrix found")
    for name, m in matrices:
        if m.shape != (n, n):
            raise InputError(f"{where}: {name} is {'x'.join(map(str, m.shape))}; the checkpoint was trained on {n}x{n}")
        bad = ~np.isfinite(m) | (m != np.round(m)) if m.dtype.kind == "f" else np.zeros(m.shape, bool)
        if bad.any():
            raise InputError(f"{where}: {name}: costs must be integers (tokens), got {m[bad][0]:g}")
        if m.min() < 1 or m.max() > max_cost:
            bad = m.min() if m.min() < 1 else m.max()
            raise InputError(f"{where}: {name}: cost {bad:g} is outside the trained range 1..{max_cost}")
    return np.stack([m for _, m in matrices]).astype(np.int64)


def csv_row(line: str, number: int, where: str) -> list[float]:
    """One CSV row: comma-separated fields (spaces around them allowed), or whitespace-separated
    ones when the line has no comma. An empty field (`1,,2`) is an error naming line and column."""
    text = line.strip()
    fields = text.split(",") if "," in text else text.split()
    values = []
    for column, field in enumerate(fields, 1):
        field = field.strip()
        if not field:
            raise InputError(f"{where}: line {number}, column {column}: empty field")
        if not NUMBER.fullmatch(field):
            raise InputError(f"{where}: line {number}, column {column}: {field[:20]!r} is not a number")
        values.append(float(field))
    return values


def read_npy(raw: bytes, where: str) -> np.ndarray:
    """A .npy of integers or real numbers, its header checked before anything is allocated: the
    data must be exactly what the header claims (no huge shape over a small file)."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=MAX_NPY_HEADER)
        else:
            raise InputError(f"{where}: .npy format version {version}; expected 1.0 or 2.0")
    except ValueError as exc:  # a bad magic, a header too long or not a dict
        raise InputError(f"{where}: cannot read .npy ({str(exc)[:200]})") from exc
    if dtype.kind not in "iuf" or dtype.hasobject:
        raise InputError(f"{where}: .npy of dtype {dtype}; costs are integers")
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != len(raw) - f.tell():
        raise InputError(f"{where}: the .npy header claims shape {shape} ({claimed} bytes of data), "
                         f"the file holds {len(raw) - f.tell()}")
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise InputError(f"{where}: cannot read .npy ({str(exc)[:200]})") from exc


def solve_lsa(model: ReadyModel, costs: np.ndarray) -> list[dict[str, Any]]:
    from evaluators.lsa import LABEL_ASSIGNED, LABEL_UNASSIGNED, optimal_costs, project_to_permutation

    num, n, _ = costs.shape
    out = model.solve(costs.reshape(num, n * n))
    assigned = (out["preds"] == LABEL_ASSIGNED).reshape(num, n, n)
    scores = (out["logits"][..., LABEL_ASSIGNED] - out["logits"][..., LABEL_UNASSIGNED]).reshape(num, n, n)
    projected = (project_to_permutation(scores) == LABEL_ASSIGNED).reshape(num, n, n)
    best = optimal_costs(costs)
    answers = []
    for i in range(num):
        valid = bool(np.all(np.isin(out["preds"][i], (LABEL_ASSIGNED, LABEL_UNASSIGNED))) and
                     np.all(assigned[i].sum(0) == 1) and np.all(assigned[i].sum(1) == 1))
        cost = int((costs[i] * assigned[i]).sum()) if valid else None
        answers.append({
            "assignment": assigned[i].argmax(1).tolist() if valid else None,
            "valid": valid,
            "steps": int(out["steps"][i]),
            "cost": cost,
            "optimal_cost": int(best[i]),
            "gap": cost - int(best[i]) if valid else None,
            "projected_assignment": projected[i].argmax(1).tolist(),
            "projected_cost": int((costs[i] * projected[i]).sum()),
        })
    return answers


def show_lsa(costs: np.ndarray, answer: dict[str, Any]) -> str:
    """The cost matrix with the chosen cell of each row in brackets."""
    if answer["valid"]:
        cols = answer["assignment"]
        head = (f"cost {answer['cost']}, optimal {answer['optimal_cost']} (gap {answer['gap']}), "
                f"{answer['steps']} ACT steps; assignment row -> column: {cols}")
    else:
        cols = answer["projected_assignment"]
        head = (f"not a permutation ({answer['steps']} ACT steps); the Hungarian projection of its scores, "
                f"{cols}, costs {answer['projected_cost']}, optimal {answer['optimal_cost']}")
    width = len(str(costs.max())) + 2
    rows = ["".join((f"[{c}]" if j == cols[r] else f" {c} ").rjust(width + 1) for j, c in enumerate(row)).rstrip()
            for r, row in enumerate(costs)]
    return head + "\n" + "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# Sudoku


def parse_sudoku(raw: bytes, where: str, facts: dict[str, Any]) -> np.ndarray:
    """Puzzles as digits (N, 81), 0 = blank; malformed or self-contradicting grids are errors."""
    from dataset.sudoku_solver import UNITS

    grids = []
    for number, line in content_lines(raw.decode(errors="replace")):
        if len(line) != 81 or not re.fullmatch(r"[0-9.]{81}", line):
            raise InputError(f"{where}: line {number}: expected 81 characters (digits 1-9, '.' or '0' for a blank), "
                             f"got {len(line)}: {line[:30]!r}")
        grid = np.array([0 if ch == "." else int(ch) for ch in line])
        for unit_index, unit in enumerate(UNITS):
            digits = grid[list(unit)]
            digits = digits[digits > 0]
            if len(digits) != len(set(digits.tolist())):
                kind = ("row", "column", "box")[unit_index // 9]
                raise InputError(f"{where}: line {number}: the givens repeat a digit in {kind} {unit_index % 9 + 1}")
        grids.append(grid)
    if not grids:
        raise InputError(f"{where}: no puzzle found")
    return np.stack(grids)


def solve_sudoku(model: ReadyModel, grids: np.ndarray) -> list[dict[str, Any]]:
    from evaluators.sudoku import score_sudoku

    tokens = grids + 1  # digit d -> d + 1, blank -> 1
    out = model.solve(tokens)
    answers = []
    for i in range(grids.shape[0]):
        valid = score_sudoku(tokens[i:i + 1], out["preds"][i:i + 1])["valid_grid_rate"] == 1.0
        digits = "".join(str(int(t) - 1) if 2 <= t <= 10 else "?" for t in out["preds"][i])
        answers.append({"answer": digits, "valid": bool(valid), "steps": int(out["steps"][i])})
    return answers


def show_sudoku(grid: np.ndarray, answer: dict[str, Any]) -> str:
    lines = []
    for r in range(9):
        if r in (3, 6):
            lines.append("------+-------+------")
        cells = answer["answer"][r * 9:(r + 1) * 9]
        lines.append(" | ".join(" ".join(cells[c:c + 3]) for c in (0, 3, 6)))
    verdict = "a valid solution" if answer["valid"] else "NOT a valid solution (rows, columns, boxes or givens)"
    return f"{verdict}, {answer['steps']} ACT steps\n" + "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Arithmetic


def parse_arith(raw: bytes, where: str, facts: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(expression, a, b) per line, checked against the layout's base, operation and width."""
    from dataset.build_arith_dataset import DIGIT_CHARS, OP_SYMBOLS, ArithLayout

    layout = ArithLayout.model_validate(facts["layout"])
    symbol, digits = OP_SYMBOLS[layout.op], DIGIT_CHARS[: layout.base]
    problems = []
    for number, line in content_lines(raw.decode(errors="replace")):
        match = re.fullmatch(r"\s*(\w+)\s*([+*])\s*(\w+)\s*=?\s*", line.lower())
        if match is None:
            raise InputError(f"{where}: line {number}: expected 'a {symbol} b', got {line!r}")
        a_text, op, b_text = match.groups()
        if op != symbol:
            raise InputError(f"{where}: line {number}: operation {op!r}, but the checkpoint was trained on {symbol!r}")
        for text in (a_text, b_text):
            if any(ch not in digits for ch in text):
                raise InputError(f"{where}: line {number}: {text!r} is not a base-{layout.base} number (digits {digits})")
            if len(text.lstrip("0") or "0") > layout.operand_width:
                raise InputError(f"{where}: line {number}: {text} has {len(text.lstrip('0'))} digits; the checkpoint "
                                 f"reads at most {layout.operand_width}")
        problems.append((line, int(a_text, layout.base), int(b_text, layout.base)))
    if not problems:
        raise InputError(f"{where}: no expression found")
    return problems


def to_base(value: int, base: int) -> str:
    from dataset.build_arith_dataset import DIGIT_CHARS

    text = ""
    while True:
        value, digit = divmod(value, base)
        text = DIGIT_CHARS[digit] + text
        if value == 0:
            return text


def solve_arith(model: ReadyModel, problems: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    from dataset.build_arith_dataset import DIGIT_TOKEN_OFFSET, ArithLayout, digits_to_int, encode_problems

    layout = ArithLayout.model_validate(model.facts["layout"])

    def digit_rows(values: list[int], width: int) -> np.ndarray:  # LSD first, as the layout stores them
        return np.array([[(v // layout.base**i) % layout.base for i in range(width)] for v in values], dtype=np.uint8)

    a = digit_rows([p[1] for p in problems], layout.operand_width)
    b = digit_rows([p[2] for p in problems], layout.operand_width)
    inputs, _ = encode_problems(a, b, np.zeros((len(problems), layout.answer_width), np.uint8), layout)
    out = model.solve(inputs)
    answers = []
    for (text, x, y), preds, steps in zip(problems, out["preds"], out["steps"]):
        digits = preds[layout.answer_slice].astype(np.int64) - DIGIT_TOKEN_OFFSET  # (R,)
        valid = bool(np.all((digits >= 0) & (digits < layout.base)))  # every answer slot holds a digit
        value = digits_to_int(digits, layout.base) if valid else None
        truth = x + y if layout.op == "add" else x * y
        answers.append({"expression": text, "answer": None if value is None else to_base(value, layout.base),
                        "valid": valid, "correct": value == truth, "expected": to_base(truth, layout.base),
                        "steps": int(steps)})
    return answers


def show_arith(problem: tuple[str, int, int], answer: dict[str, Any], base: int, symbol: str) -> str:
    verdict = "right" if answer["correct"] else f"wrong: {answer['expected']}"
    shown = answer["answer"] if answer["valid"] else "(not a number)"
    return (f"{to_base(problem[1], base)} {symbol} {to_base(problem[2], base)} = {shown}   "
            f"[base {base}; {verdict}; {answer['steps']} ACT steps]")


# ---------------------------------------------------------------------------------------------


def read_input(name: str) -> tuple[bytes, str]:
    """The input's bytes, read up to MAX_INPUT_BYTES (a FIFO or device is read the same way)."""
    where = "<stdin>" if name == "-" else f"--input {name}"
    if name == "-":
        raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    else:
        path = Path(name)
        if not path.exists():
            raise InputError(f"--input {name}: file not found")
        if path.is_dir():
            raise InputError(f"--input {name}: is a directory")
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_INPUT_BYTES + 1)
        except OSError as exc:
            raise InputError(f"--input {name}: cannot read ({exc.strerror or exc})") from exc
    if len(raw) > MAX_INPUT_BYTES:
        raise InputError(f"{where}: more than {MAX_INPUT_BYTES} bytes; give the instances in smaller files")
    return raw, where


def check_device(name: str) -> str:
    """--device as a device this machine has (cuda without CUDA is one line, not a traceback)."""
    from training.config import ConfigError
    from training.setup import resolve_device

    try:
        return str(resolve_device(name))
    except ConfigError as exc:
        raise InputError(f"--device {name}: {str(exc).split(': ', 1)[-1]}") from exc


def solve(args: SolveArgs) -> dict[str, Any]:
    from training.runs import locate_run

    model = load_model(locate_run(args.checkpoint, args.runs_dir), check_device(args.device), args.halting)
    task = model.facts.get("task")
    raw, where = read_input(args.input)
    if task == "lsa":
        costs = parse_lsa(raw, where, model.facts)
        answers = solve_lsa(model, costs)
        shown = [show_lsa(c, a) for c, a in zip(costs, answers)]
    elif task == "sudoku":
        grids = parse_sudoku(raw, where, model.facts)
        answers = solve_sudoku(model, grids)
        shown = [show_sudoku(g, a) for g, a in zip(grids, answers)]
    elif task == "arith":
        problems = parse_arith(raw, where, model.facts)
        answers = solve_arith(model, problems)
        layout = model.facts["layout"]
        symbol = "+" if layout["op"] == "add" else "*"
        shown = [show_arith(p, a, layout["base"], symbol) for p, a in zip(problems, answers)]
    else:
        raise InputError(f"--checkpoint {args.checkpoint}: task {task!r}; solve.py handles lsa, sudoku and arith")
    for i, text in enumerate(shown, 1):
        print(f"#{i}: {text}\n")
    return {"task": task, "checkpoint": model.source, "weights": model.weights, "halting": model.halting,
            "answers": answers}


cli = CLI(name="solve", description="Apply a trained model to your own instances; prints one JSON object last.")


@cli.command(singleton=True)
def main(args: SolveArgs) -> None:
    print(json.dumps(solve(args)))


if __name__ == "__main__":
    run_cli(cli)
