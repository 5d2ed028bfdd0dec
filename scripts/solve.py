"""Apply a trained model to your own instances.

    python scripts/solve.py --checkpoint runs/trm-lsa-cpu/<run> --input costs.csv     # or costs.npy, or - (stdin)
    python scripts/solve.py --checkpoint exports/sudoku --input puzzles.txt
    echo "1a3f+ff" | python scripts/solve.py --checkpoint runs/trm-arith/<run> --input -

The task comes from the checkpoint (or exported directory, scripts/export.py); the task reads,
answers and shows the instances (its `Task.parse`, `solve`, `show` in evaluators/<task>.py; the
input format each expects is its `Task.input_help`, e.g. LSA: cost matrices as CSV or .npy,
Sudoku: one 81-character puzzle per line, arithmetic: one expression per line). Each answer is printed readably; the last line is one JSON object: the answers, whether each is
valid, the ACT steps used, and for LSA the cost, scipy's optimal cost and the gap. Input that
does not fit the checkpoint is one line on stderr, exit code 2. The task's parse gets the raw
bytes: LSA, Sudoku and arithmetic skip lines starting with '#' as comments; another task may read
them (its input format, `Task.input_help`, is listed under --input in --help).
Input is read up to 16 MiB (a larger file, or an endless one such as /dev/zero, is refused).

A test-time budget (training/voting.py): --act-steps N answers with N ACT steps (not the trained
halt_max_steps); --vote K answers each instance K times under the task's symmetries and keeps one
(--vote-policy majority|confidence|check); each answer then says which policy chose it
("chosen_by") and how many candidates agreed ("agreement"), and the JSON's "test_time" the budget.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

from pydantic import BaseModel, Field  # noqa: E402

from core.cli import CLI, GivenPath, run_cli  # noqa: E402
from core.errors import InputError  # noqa: E402
from evaluators.tasks import all_tasks, get_task  # noqa: E402
from training.inference import load_model  # noqa: E402
from training.engine.threads import apply_threads  # noqa: E402
from training.voting import check_act_steps, check_votes  # noqa: E402

MAX_INPUT_BYTES = 16 << 20  # far more instances than one call should hold; never an unbounded read


class SolveArgs(BaseModel):
    checkpoint: GivenPath = Field(description="a run (directory, name or wandb id), checkpoint or exported directory")
    runs_dir: GivenPath = Field(Path("runs"), description="where a run name or wandb id given as --checkpoint is looked up")
    input: str = Field(description="the instances: a file, or - for standard input; by the checkpoint's task: "
                       + "; ".join(f"{task.name}: {task.input_help}" for task in all_tasks()))
    device: str = Field("cpu", description="cpu, cuda, cuda:N")
    halting: Optional[Literal["max_steps", "q_head"]] = Field(
        None, description="which answer counts (default: the run's train.eval_halting)")
    act_steps: Optional[int] = Field(None, description="ACT steps per answer (default: the run's arch.halt_max_steps)")
    vote: int = Field(1, description="answers per instance from the task's symmetries (1 = the plain answer; at most 64)")
    vote_policy: str = Field("majority", description="majority, confidence (the Q head's surest) or check (the task's "
                             "label-free check, else majority)")
    vote_seed: int = Field(0, ge=0, description="seed of the symmetries drawn for --vote")


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
    from training.engine.setup import resolve_device

    try:
        return str(resolve_device(name))
    except ConfigError as exc:
        raise InputError(f"--device {name}: {str(exc).split(': ', 1)[-1]}") from exc


def solve(args: SolveArgs) -> dict[str, Any]:
    from training.bookkeeping.runs import locate_run

    apply_threads("auto")  # torch's threads as training chooses them (training/engine/threads.py)
    check_act_steps(args.act_steps)
    check_votes(args.vote, args.vote_policy)
    model = load_model(locate_run(args.checkpoint, args.runs_dir), check_device(args.device), args.halting,
                       act_steps=args.act_steps, votes=args.vote, vote_policy=args.vote_policy, vote_seed=args.vote_seed)
    raw, where = read_input(args.input)
    task = get_task(model.facts.get("task"), where=f"--checkpoint {args.checkpoint}: task")
    if args.vote > 1 and task.symmetries is None:
        raise InputError(f"--vote {args.vote}: task {task.name!r} declares no symmetries; only --vote 1 applies")
    instances = task.parse(raw, where, model.facts)
    answers = task.solve(model, instances)
    test_time: dict[str, Any] = {"act_steps": model.act_steps, "votes": 1, "vote_policy": None}
    if model.last_vote is not None:  # voted: which policy chose each answer
        for answer, chosen_by, agreement in zip(answers, model.last_vote["chosen_by"], model.last_vote["agreement"]):
            answer.update(chosen_by=chosen_by, agreement=agreement)
        summary = model.last_vote["summary"]
        test_time.update(votes=summary["test_time/votes"], vote_policy=args.vote_policy,
                         chosen_by={k.removeprefix("test_time/chosen_by_"): v for k, v in summary.items()
                                    if k.startswith("test_time/chosen_by_")})
    shown = [task.show(instance, answer, model.facts) for instance, answer in zip(instances, answers)]
    for i, (text, answer) in enumerate(zip(shown, answers), 1):
        chosen = f" [chosen by {answer['chosen_by']}, agreement {answer['agreement']:.2f}]" if "chosen_by" in answer else ""
        print(f"#{i}: {text}{chosen}\n")
    return {"task": task.name, "checkpoint": model.source, "weights": model.weights, "halting": model.halting,
            "test_time": test_time, "answers": answers}


cli = CLI(name="solve", description="Apply a trained model to your own instances; prints one JSON object last.")


@cli.command(singleton=True)
def main(args: SolveArgs) -> None:
    print(json.dumps(solve(args)))


if __name__ == "__main__":
    run_cli(cli)
