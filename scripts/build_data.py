"""Build the dataset a config names, if it is missing, and exit: before starting several runs
that share it (side by side on several GPUs, or a torchrun job), so that no run waits on
another's build or spends its time budget building.

    python scripts/build_data.py --config-name cfg_sudoku
    python scripts/build_data.py --config-name cfg_lsa_400s data.build_args.n=12 data.path=data/lsa-12x12

The dataset is what `pretrain.py` with the same config and overrides would build on first use
(same builder, arguments and path; a concurrent build of the same path waits for the first).
Prints the dataset path last.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file from anywhere
if __name__ == "__main__":  # before the heavy imports: a signal now is one line, not a traceback
    from core.early_signals import exit_on_signals  # noqa: E402

    exit_on_signals()

from core.cli import plain_parser, run_cli  # noqa: E402
from core.errors import DatasetError  # noqa: E402
from dataset.common import dataset_exists, read_metadata  # noqa: E402


def main(argv: Optional[list[str]] = None) -> None:
    parser = plain_parser("Build the dataset that a pretrain.py config names (if it is missing).")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="pretrain.py overrides")
    parser.add_argument("--config-name", default="cfg_lsa", help="the config (default cfg_lsa)")
    args = parser.parse_intermixed_args(argv)
    from training.config import validate_config
    from training.hydra_guard import compose_config
    from training.engine.setup import build_differences, prepare_data

    cfg = validate_config(compose_config(args.config_name, args.overrides))
    path = Path(cfg.data.path)
    if dataset_exists(path):
        for split in ("train", "test", "val"):  # a broken dataset is an error, not "present"
            if split != "val" or (path / split).exists():
                read_metadata(path / split / "dataset.json")
        differences = build_differences(cfg)
        if differences:
            raise DatasetError(f"data.path={path} holds a dataset built with {', '.join(differences)}; point "
                               "data.path elsewhere, or remove that directory to build this one")
        print(f"{path}: present; nothing to build")
    else:
        start = time.perf_counter()
        prepare_data(cfg, progress=cfg.logging.progress)
        print(f"{path}: built in {time.perf_counter() - start:.1f} s")
    print(path)


if __name__ == "__main__":
    run_cli(main)
