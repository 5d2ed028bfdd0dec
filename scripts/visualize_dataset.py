"""Pictures of a dataset's examples, one PNG each.

    python scripts/visualize_dataset.py --data data/lsa-4x4-cpu --out pictures/lsa --count 4
    python scripts/visualize_dataset.py --data data/sudoku-hard-22-26-1k-aug1000 --out pictures/sudoku --split train --start 1000

LSA: the cost matrix as a heat map, the optimal assignment boxed. Sudoku: the givens in bold on
grey, the solution in blue. Arithmetic: the problem written in columns, as on paper. Files are
named <split>_<index>.png; the last line printed is one JSON object listing them. Existing
pictures are replaced only with --overwrite (checked for all before the first is drawn), each
written beside its name and renamed into place, never through a symbolic link.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

from pydantic import BaseModel, Field  # noqa: E402

from core.cli import CLI, GivenPath, run_cli  # noqa: E402
from core.errors import DatasetError  # noqa: E402
from core.paths import refuse_broken_link  # noqa: E402
from dataset.common import load_split  # noqa: E402
from dataset.loader import concat_sets  # noqa: E402
from evaluators.render import check_new_output, render_example, save  # noqa: E402
from training.inference import check_task_facts, task_facts  # noqa: E402


class VisualizeArgs(BaseModel):
    data: GivenPath = Field(description="dataset directory (train/, test/)")
    out: GivenPath = Field(description="directory for the pictures (created if missing)")
    count: int = Field(4, ge=1, le=1000, description="how many examples")
    start: int = Field(0, ge=0, description="index of the first example")
    split: Literal["train", "test", "val"] = "test"
    overwrite: bool = Field(False, description="replace pictures that already exist")


def visualize(args: VisualizeArgs) -> list[Path]:
    refuse_broken_link(args.out, "--out")
    meta, sets = load_split(args.data, args.split)
    arrays = concat_sets(sets)
    if args.start >= arrays.num_examples:
        raise DatasetError(f"--start {args.start}: the {args.split} split has {arrays.num_examples} examples")
    facts = task_facts(meta) | {"seq_len": meta.seq_len, "vocab_size": meta.vocab_size,
                                "num_puzzle_identifiers": meta.num_puzzle_identifiers}
    where = args.data / args.split / "dataset.json"
    check_task_facts(facts, where)  # facts that contradict the arrays' shape: one line, not a traceback
    try:
        from evaluators.render import task_of

        task = task_of(facts)
    except ValueError as exc:
        raise DatasetError(f"{where}: {exc}") from exc
    indices = range(args.start, min(args.start + args.count, arrays.num_examples))
    targets = [args.out / f"{args.split}_{index:05d}.png" for index in indices]
    for target in targets:  # before any is written: all or nothing is refused
        check_new_output(target, args.overwrite)
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, target in zip(indices, targets):
        fig = render_example(facts, arrays.inputs[index], arrays.labels[index], title=f"{task} {args.split} #{index}")
        written.append(save(fig, target, args.overwrite))
        print(f"wrote {written[-1]}")
    return written


cli = CLI(name="visualize_dataset", description="Pictures of a dataset's examples (PNG); prints one JSON object last.")


@cli.command(singleton=True)
def main(args: VisualizeArgs) -> None:
    print(json.dumps({"files": [str(p) for p in visualize(args)]}))


if __name__ == "__main__":
    run_cli(cli)
