"""Train a recursive reasoning model: compose the Hydra config, validate it, train.

    python pretrain.py --config-name cfg_lsa_cpu            # 4x4 LSA on a laptop CPU, minutes
    python pretrain.py --config-name cfg_lsa                # 9x9 LSA, compiled bf16 on a GPU
    python pretrain.py --config-name cfg_lsa train.max_train_seconds=400 arch=trm_mlp
    python pretrain.py --config-name cfg_lsa logging.run_name=NAME train.resume=true   # continue a run

Known bad input (config, dataset, checkpoint) ends with one line on stderr and exit code 2.
A first SIGTERM/SIGINT writes a checkpoint and exits 0; a second exits at once.
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from dataset.common import InputError
from training.config import compose_config, validate_config

# Hydra's own flags: with any of these, Hydra handles the command line alone.
HYDRA_FLAGS = ("-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion",
               "-m", "--multirun", "-p", "--package", "--resolve", "-cp", "--config-path", "-cd", "--config-dir",
               "--experimental-rerun")


def precheck(argv: list[str]) -> None:
    """Compose once before Hydra does, so that an unknown key or config name is reported on
    one line (Hydra's own report spans several)."""
    config_name, overrides, args = "cfg_lsa", [], iter(argv)
    for arg in args:
        if arg.split("=", 1)[0] in ("--config-name", "-cn"):
            config_name = arg.split("=", 1)[1] if "=" in arg else next(args, config_name)
        elif arg.startswith("-"):
            if arg.split("=", 1)[0] in HYDRA_FLAGS:
                return
        else:
            overrides.append(arg)
    if not any(o.startswith("hydra.") or o.startswith("hydra/") for o in overrides):
        compose_config(config_name, overrides)


@hydra.main(config_path="config", config_name="cfg_lsa", version_base=None)
def main(hydra_cfg: DictConfig) -> None:
    from training.loop import TrainingDiverged, train  # after Hydra parsed argv: keeps --help fast

    try:
        cfg = validate_config(OmegaConf.to_container(hydra_cfg, resolve=True))
        result = train(cfg)
    except (InputError, TrainingDiverged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        precheck(sys.argv[1:])
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    main()
