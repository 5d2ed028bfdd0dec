"""Accuracy against test-time compute for one checkpoint: a grid of ACT steps x votes.

    python scripts/ttc_sweep.py --checkpoint runs/trm-sudoku/<run> --out ttc/
    python scripts/ttc_sweep.py --checkpoint <run> --out ttc/ --act-steps 16,32,64 --votes 1,4,8,16 \
        --vote-policies majority,check --max-examples 500 --max-seconds 300

For each ACT step budget (the model's halt_max_steps at test time, training/voting.py) the test
split (or its first --max-examples instances) is answered once per candidate: the instance itself,
then copies under the task's symmetries, each answer mapped back, up to the largest --votes. A
cell (act steps, K, policy) votes over the first K candidates (so its answers are those of
`scripts/evaluate.py --act-steps A --vote K --vote-policy P`) and is scored; labels are read only
after the choice. A cell's time is what its own K candidates took to answer plus its vote and
scoring. With --max-seconds the sweep stops answering when the time is up: cells it could not
complete are listed as skipped, never guessed.

Writes into --out (a new or empty directory): ttc_sweep.json (every cell, the command line, the
checkpoint, device and examples), ttc_sweep.md (the table) and ttc_sweep.png (the task's headline
metric against K, one line per ACT step budget, one panel per policy). The last line printed is
the JSON's path.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Literal, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

import numpy as np  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402

from core.cli import CLI, GivenPath, OptionalGivenPath, run_cli  # noqa: E402
from core.errors import InputError  # noqa: E402
from core.paths import refuse_broken_link  # noqa: E402
from dataset.loader import PuzzleDataset  # noqa: E402
from evaluators import build_evaluators  # noqa: E402
from evaluators.tasks import get_task  # noqa: E402
from training.engine.checkpoint import CheckpointError, check_data_compatible, load_config, load_meta, resolve_checkpoint  # noqa: E402
from training.config import MAX_BATCH_SIZE, ConfigError, validate_config  # noqa: E402
from training.inference import load_model  # noqa: E402
from training.bookkeeping.runs import locate_run  # noqa: E402
from training.engine.threads import apply_threads  # noqa: E402
from training.voting import (  # noqa: E402
    BudgetError, Candidates, answer_candidates, candidate_symmetries, check_act_steps, check_votes,
    evaluate_votes,
)

MAX_CELLS = 256  # act-step budgets x vote counts x policies
OUTPUTS = ("ttc_sweep.json", "ttc_sweep.md", "ttc_sweep.png")


class SweepArgs(BaseModel):
    checkpoint: GivenPath = Field(description="checkpoint directory, or a run (directory, name or wandb id: its latest checkpoint)")
    out: GivenPath = Field(description="directory for ttc_sweep.{json,md,png} (new or empty)")
    runs_dir: GivenPath = Field(Path("runs"), description="where a run name or wandb id given as --checkpoint is looked up")
    data: OptionalGivenPath = Field(None, description="dataset directory (default: the one the run trained on)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    batch_size: Optional[int] = Field(None, ge=1, le=MAX_BATCH_SIZE, description="default: the run's eval batch size")
    halting: Optional[str] = Field(None, description="max_steps or q_head (default: the run's train.eval_halting)")
    split: Literal["test", "val"] = Field("test", description="the split to answer: test, or val (a dataset built with "
                                          "--val-size; choose test-time settings there, report them on test)")
    act_steps: str = Field("16,32,64", description="ACT step budgets, comma-separated")
    votes: str = Field("1,4,8,16", description="vote counts K, comma-separated (each 1..64)")
    vote_policies: str = Field("majority,confidence,check", description="policies, comma-separated")
    vote_seed: int = Field(0, ge=0, description="seed of the symmetries")
    max_examples: Optional[int] = Field(None, ge=1, description="score the first N instances of the split only")
    max_seconds: Optional[float] = Field(None, gt=0, description="stop answering after this many seconds (wall time)")


def parse_list(text: str, flag: str, check) -> list:
    items = [part.strip() for part in text.split(",")]
    if not any(items):
        raise BudgetError(f"{flag} {text!r}: expected a comma-separated list")
    if not all(items):
        raise BudgetError(f"{flag} {text!r}: an item is empty")
    out = []
    for item in items:
        value: Any = item
        if check is not None:
            try:
                value = int(item)
            except ValueError:
                raise BudgetError(f"{flag} {text!r}: {item!r} is not an integer") from None
            try:
                check(value)
            except BudgetError as exc:  # the check names the single-value flag (--vote); this one is --votes
                raise BudgetError(f"{flag} {text!r}: {exc}") from None
        out.append(value)
    if len(set(out)) != len(out):
        raise BudgetError(f"{flag} {text!r}: a value is repeated")
    return sorted(out) if check is not None else out


def check_out(out: Path) -> None:
    refuse_broken_link(out, "--out")
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise InputError(f"--out {out}: exists and is not an empty directory; give a new one (nothing is overwritten)")


def sweep(args: SweepArgs, command: str) -> dict[str, Any]:
    act_budgets = parse_list(args.act_steps, "--act-steps", check_act_steps)
    vote_counts = parse_list(args.votes, "--votes", lambda k: check_votes(k))
    policies = parse_list(args.vote_policies, "--vote-policies", None)
    for policy in policies:
        try:
            check_votes(1, policy)
        except BudgetError as exc:  # it names --vote-policy; this flag is --vote-policies
            raise BudgetError(f"--vote-policies {args.vote_policies!r}: {exc}") from None
    if len(act_budgets) * len(vote_counts) * len(policies) > MAX_CELLS:
        raise BudgetError(f"--act-steps x --votes x --vote-policies: more than {MAX_CELLS} cells")
    if args.halting is not None and args.halting not in ("max_steps", "q_head"):
        raise InputError(f"--halting {args.halting!r}: expected max_steps or q_head")
    check_out(args.out)
    ckpt = resolve_checkpoint(locate_run(args.checkpoint, args.runs_dir))
    try:
        cfg = validate_config(load_config(ckpt))
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt / 'config.json'}: {str(exc).removeprefix('config: ')}") from exc
    data_path = args.data or Path(cfg.data.path)
    data = PuzzleDataset.load(data_path)
    check_data_compatible(ckpt, load_meta(ckpt), data.meta, data_path)
    task = get_task(getattr(data.meta, "task", None), where=f"{data_path}: task")
    if max(vote_counts) > 1 and task.symmetries is None:
        raise BudgetError(f"--votes {args.votes}: task {task.name!r} declares no symmetries; only 1 applies")
    from training.engine.setup import resolve_device

    device = resolve_device(args.device)
    apply_threads(cfg.train.num_threads)  # the run's setting (auto: training/engine/threads.py)
    batch_size = args.batch_size or cfg.train.eval_batch_size or cfg.train.global_batch_size
    meta, split = data.split(args.split)  # a missing val/ is one line naming it
    num = split.num_examples if args.max_examples is None else min(args.max_examples, split.num_examples)
    inputs = split.inputs[:num].astype(np.int64)
    labels = split.labels[:num]
    puzzle_of_example = np.repeat(np.arange(split.num_puzzles), np.diff(split.puzzle_indices.astype(np.int64)))
    ids = split.puzzle_identifiers[puzzle_of_example][:num]
    start = time.monotonic()
    deadline = None if args.max_seconds is None else start + args.max_seconds
    cells: list[dict[str, Any]] = []
    models = {act: load_model(ckpt, str(device), args.halting, act_steps=act) for act in act_budgets}
    halting = next(iter(models.values())).halting
    facts = next(iter(models.values())).facts
    symmetries = candidate_symmetries(task, facts, max(vote_counts), args.vote_seed)
    # Candidate by candidate, every budget in turn: a sweep stopped by --max-seconds has the
    # small K of every budget rather than every K of the small budgets.
    answered: dict[int, list[Candidates]] = {act: [] for act in act_budgets}
    for symmetry in symmetries:
        if deadline is not None and time.monotonic() >= deadline:
            break
        for act in act_budgets:
            if deadline is not None and time.monotonic() >= deadline:
                break
            ready = models[act]
            answered[act].append(answer_candidates(lambda x: ready.answer(x, batch_size, ids, keep_logits=False),
                                                   inputs, [symmetry]))
        print(f"candidate {len(answered[act_budgets[-1]])}/{len(symmetries)} answered for every budget "
              f"({time.monotonic() - start:.0f} s so far)", file=sys.stderr)
    for act in act_budgets:
        parts = answered[act]
        candidates = Candidates([n for c in parts for n in c.names], *(np.concatenate([getattr(c, f) for c in parts])
                                for f in ("preds", "q_halt", "steps")), [t for c in parts for t in c.seconds]) \
            if parts else None
        for k in vote_counts:
            wanted = len(candidate_symmetries(task, facts, k, args.vote_seed))
            for policy in policies:
                cell = {"act_steps": act, "votes": k, "candidates": wanted, "policy": policy}
                if candidates is None or len(candidates.names) < wanted:
                    cells.append({**cell, "status": "skipped (--max-seconds)"})
                    continue
                evaluators = build_evaluators(cfg.evaluators, data)
                used = candidates.prefix(wanted)
                metrics = evaluate_votes(used, task, facts, inputs, labels, meta.ignore_label_id, evaluators, policy, act)
                seconds = float(sum(used.seconds)) + metrics["test_time/vote_seconds"]
                cells.append({**cell, "status": "ran", "seconds": seconds,
                              "answer_seconds": float(sum(used.seconds)), "metrics": metrics})
    import torch

    report = {
        "command": command,
        "checkpoint": str(ckpt),
        "data": str(data_path),
        "split": args.split,
        "task": task.name,
        "headline_metric": task.headline_metric,
        "trained_act_steps": cfg.arch.halt_max_steps,
        "halting": halting,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "examples": int(num),
        "batch_size": batch_size,
        "vote_seed": args.vote_seed,
        "max_seconds": args.max_seconds,
        "seconds": time.monotonic() - start,
        "cells": cells,
    }
    write_report(args.out, report)
    return report


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(report: dict[str, Any]) -> str:
    head = report["headline_metric"]
    lines = [f"# Test-time compute sweep: {report['task']}", "",
             f"Command: `{report['command']}`", "",
             f"Checkpoint `{report['checkpoint']}` (trained with {report['trained_act_steps']} ACT steps, halting "
             f"{report['halting']}), {report['examples']} {report.get('split', 'test')} instances of `{report['data']}`, on {report['device']}; "
             f"total {report['seconds']:.1f} s.", "",
             f"| ACT steps | K | candidates | policy | {head} | exact | plain exact | agreement | chosen by check / "
             "majority / confidence | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for cell in report["cells"]:
        if cell["status"] != "ran":
            lines.append(f"| {cell['act_steps']} | {cell['votes']} | {cell['candidates']} | {cell['policy']} | "
                         f"{cell['status']} | | | | | |")
            continue
        m = cell["metrics"]
        chosen = " / ".join(fmt(m.get(f"test_time/chosen_by_{p}"), 2) for p in ("check", "majority", "confidence"))
        lines.append(f"| {cell['act_steps']} | {cell['votes']} | {cell['candidates']} | {cell['policy']} | "
                     f"{fmt(m.get(head))} | {fmt(m.get('eval/exact_accuracy'))} | "
                     f"{fmt(m.get('test_time/plain_exact_accuracy'))} | {fmt(m.get('test_time/agreement'), 3)} | "
                     f"{chosen} | {cell['seconds']:.2f} |")
    return "\n".join(lines + group_table(report)) + "\n"


GROUP_KEY = re.compile(r"^eval/[^/]+/((?:givens|rating)_[^/]+)/exact_accuracy$")


def group_table(report: dict[str, Any]) -> list[str]:
    """Exact accuracy of every cell by the evaluator's groups (Sudoku: number of givens), when it
    reports them: one row per cell, one column per group, the groups' sizes in the last row."""
    ran = [cell for cell in report["cells"] if cell["status"] == "ran"]
    groups = sorted({m[1] for cell in ran for key in cell["metrics"] if (m := GROUP_KEY.match(key))},
                    key=lambda g: (g.split("_")[0], [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", g)]))
    if not groups:
        return []
    prefix = next(key for key in ran[0]["metrics"] if GROUP_KEY.match(key)).split("/")[1]
    lines = ["", "Exact accuracy by group (the evaluator's own groups; sizes in the last row):", "",
             "| ACT steps | K | policy | " + " | ".join(groups) + " |", "|---|---|---|" + "---|" * len(groups)]
    for cell in ran:
        lines.append(f"| {cell['act_steps']} | {cell['votes']} | {cell['policy']} | "
                     + " | ".join(fmt(cell["metrics"].get(f"eval/{prefix}/{g}/exact_accuracy")) for g in groups) + " |")
    lines.append("| | | instances | " + " | ".join(fmt(ran[0]["metrics"].get(f"eval/{prefix}/{g}/count"), 0)
                                                   for g in groups) + " |")
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    policies = list(dict.fromkeys(cell["policy"] for cell in report["cells"]))
    fig = Figure(figsize=(4.2 * len(policies), 3.6), dpi=120)
    axes = fig.subplots(1, len(policies), squeeze=False)[0]
    head = report["headline_metric"]
    for ax, policy in zip(axes, policies):
        for i, act in enumerate(sorted({cell["act_steps"] for cell in report["cells"]})):
            ran = [c for c in report["cells"] if c["policy"] == policy and c["act_steps"] == act and c["status"] == "ran"]
            if ran:  # each series its own marker and line style as well as colour (colour-blind readers)
                ax.plot([c["votes"] for c in ran], [c["metrics"].get(head, math.nan) for c in ran],
                        marker="osD^v"[i % 5], linestyle=("-", "--", "-.", ":")[i % 4], label=f"{act} ACT steps")
        ax.set_xscale("log", base=2)
        ks = sorted({c["votes"] for c in report["cells"]})
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.minorticks_off()
        ax.set_xlabel("votes K (answers per instance)")
        ax.set_ylabel(head.removeprefix("eval/"))
        ax.set_title(f"policy: {policy}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{report['task']}: {report['examples']} {report.get('split', 'test')} instances", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ttc_sweep.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "ttc_sweep.md").write_text(table(report))
    plot(report, out / "ttc_sweep.png")


cli = CLI(name="ttc_sweep", description="Accuracy against test-time compute (ACT steps x votes) for one checkpoint.")


@cli.command(singleton=True)
def main(args: SweepArgs) -> None:
    command = shlex.join(["python", "scripts/ttc_sweep.py", *sys.argv[1:]])
    sweep(args, command)
    print(table_path(args.out))


def table_path(out: Path) -> Path:
    return out / "ttc_sweep.json"


if __name__ == "__main__":
    run_cli(cli)
