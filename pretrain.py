"""Train a recursive reasoning model: compose the Hydra config, validate it, train.

    python pretrain.py --config-name cfg_lsa_cpu            # 4x4 LSA on a laptop CPU, minutes
    python pretrain.py --config-name cfg_lsa                # 9x9 LSA, compiled bf16 on a GPU
    python pretrain.py --config-name cfg_lsa train.max_train_seconds=400 arch=trm_mlp
    python pretrain.py --config-name cfg_lsa logging.run_name=NAME train.resume=true   # continue a run

Known bad input (config, dataset, checkpoint) ends with one line on stderr and exit code 2.
A first SIGTERM/SIGINT during training writes a checkpoint and exits 0; a second exits at
once; one before the first training step ends the run at once (exit 128 + signal).
"""

from __future__ import annotations

import json
import sys

from dataset.common import Interrupted, ReportedError, interrupt_on_signals
from training.config import compose_config, validate_config

# Hydra's own flags: with any of these (or a `hydra.` override), Hydra handles the command line.
HYDRA_FLAGS = ("-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info", "-sc", "--shell-completion",
               "-m", "--multirun", "-p", "--package", "--resolve", "-cp", "--config-path", "-cd", "--config-dir",
               "--experimental-rerun")


def parse_argv(argv: list[str]) -> tuple[str, list[str], bool]:
    """(config name, overrides, whether Hydra itself must handle this command line)."""
    config_name, overrides, args, hydra_only = "cfg_lsa", [], iter(argv), False
    for arg in args:
        if arg.split("=", 1)[0] in ("--config-name", "-cn"):
            config_name = arg.split("=", 1)[1] if "=" in arg else next(args, config_name)
        elif arg.startswith("-"):
            hydra_only = hydra_only or arg.split("=", 1)[0] in HYDRA_FLAGS
        else:
            overrides.append(arg)
            hydra_only = hydra_only or arg.startswith(("hydra.", "hydra/", "+hydra", "~hydra"))
    return config_name, overrides, hydra_only


def run(config_name: str, overrides: list[str]) -> int:
    """Compose, validate, train; returns the exit code. Bad input: one line on stderr, 2."""
    try:
        with interrupt_on_signals():  # start-up too: a signal while importing or composing is one line
            from training.loop import train  # after argv parsing: keeps --help fast

            result = train(validate_config(compose_config(config_name, overrides)))
    except ReportedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 128 + exc.signum
    print(json.dumps(result))
    return 0


def hydra_main() -> None:
    """Hydra's own command line (--help, --cfg, -m, hydra.* overrides)."""
    import hydra
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(config_path="config", config_name="cfg_lsa", version_base=None)
    def main(hydra_cfg: DictConfig) -> None:
        from training.loop import train

        try:
            result = train(validate_config(OmegaConf.to_container(hydra_cfg, resolve=True)))
        except ReportedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except Interrupted as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(128 + exc.signum)
        print(json.dumps(result))

    main()


if __name__ == "__main__":
    name, overrides, hydra_only = parse_argv(sys.argv[1:])
    if hydra_only:
        hydra_main()
    else:
        sys.exit(run(name, overrides))
