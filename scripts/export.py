"""Export a checkpoint's weights as safetensors, with the config needed to rebuild the model.

    python scripts/export.py --checkpoint runs/trm-lsa-cpu/<run> --out exports/lsa-cpu          # EMA weights
    python scripts/export.py --checkpoint runs/.../checkpoints/step_0002000 --out exp --no-ema  # raw weights

Writes OUT/model.safetensors and OUT/config.json. Load it back, ready for inference, with one call:

    from training.inference import load_model
    model = load_model("exports/lsa-cpu")           # a ReadyModel: model.solve(tokens) -> preds, steps
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

from pydantic import BaseModel, Field  # noqa: E402

from core.cli import CLI, GivenPath, run_cli  # noqa: E402
from training.inference import CONFIG_FILE, WEIGHTS_FILE, export_model  # noqa: E402
from training.bookkeeping.runs import locate_run  # noqa: E402
from training.engine.threads import apply_threads  # noqa: E402


class ExportArgs(BaseModel):
    checkpoint: GivenPath = Field(description="a checkpoint directory, or a run (directory, name or wandb id: its latest checkpoint)")
    runs_dir: GivenPath = Field(Path("runs"), description="where a run name or wandb id given as --checkpoint is looked up")
    out: GivenPath = Field(description="the directory to write (model.safetensors, config.json)")
    ema: bool = Field(True, description="export the EMA weights (what evaluation uses) when the checkpoint has them")
    overwrite: bool = Field(False, description="replace an export this project wrote at --out (nothing else)")


cli = CLI(name="export", description="Export a checkpoint as safetensors weights + config.json; prints one JSON object last.")


@cli.command(singleton=True)
def main(args: ExportArgs) -> None:
    apply_threads("auto")  # torch's threads as training chooses them (training/engine/threads.py)
    config = export_model(locate_run(args.checkpoint, args.runs_dir), args.out, ema=args.ema, overwrite=args.overwrite)
    print(f"wrote {args.out / WEIGHTS_FILE} ({config['weights']} weights, {config['parameters']:,} parameters) "
          f"and {args.out / CONFIG_FILE} from {config['source']['checkpoint']}")
    print(json.dumps({"out": str(args.out), **{k: config[k] for k in ("weights", "parameters", "source", "data")}}))


if __name__ == "__main__":
    run_cli(cli)
