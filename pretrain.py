"""Train a recursive reasoning model: compose the Hydra config, validate it, train.

    python pretrain.py --help                               # the configs, model variants and flags
    python pretrain.py --config-name cfg_lsa_cpu            # 4x4 LSA on a laptop CPU, minutes
    python pretrain.py --config-name cfg_lsa                # 9x9 LSA, compiled bf16 on a GPU
    python pretrain.py --config-name cfg_lsa train.max_train_seconds=400 arch=trm_mlp
    python pretrain.py --config-name cfg_lsa logging.run_name=NAME train.resume=true   # continue a run
    python pretrain.py --check --config-name cfg_lsa ...    # validate config and run directory only
    python pretrain.py --config-name cfg_lsa_cpu -m optim.lr=1e-3,3e-3   # a sweep: runs <name>-0, <name>-1

Known bad input (config, dataset, checkpoint) ends with one line on stderr and exit code 2,
before anything runs: also with `--cfg job` and for every job of a `-m` sweep.
A first SIGTERM/SIGINT during training writes a checkpoint and exits 0; a second exits at
once; one before the first training step ends the run at once (exit 128 + signal).
A plain run (no Hydra flag, no hydra.* override) goes through `run()`, which tests also call
in-process; Hydra's own command line (`--cfg`, `-m`, ...) goes through `main()`.
"""

from __future__ import annotations

if __name__ == "__main__":  # first of all: a signal while the imports below run is one line, not a traceback
    import faulthandler

    from dataset.early_signals import exit_on_signals

    exit_on_signals()
    faulthandler.enable()  # a crash below Python (SIGSEGV, SIGABRT) prints where each thread was

import itertools
import json
import os
import sys
from pathlib import Path
from typing import Optional

import hydra
from omegaconf import DictConfig, OmegaConf

from dataset.common import Interrupted, ReportedError, interrupt_on_signals, one_line, os_error_line
from training.config import CONFIG_DIR, ConfigError, compose_config, validate_config

# Hydra's flags that take a value (`--cfg job`), and those after which we check nothing:
# another config directory, or no config at all.
VALUE_FLAGS = ("--config-name", "-cn", "--cfg", "-c", "-p", "--package", "-cp", "--config-path", "-cd",
               "--config-dir", "--experimental-rerun")
UNCHECKED_FLAGS = ("--hydra-help", "--version", "-sc", "--shell-completion", "-cp", "--config-path", "-cd",
                   "--config-dir", "--experimental-rerun")
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def parse_argv(argv: list[str]) -> tuple[str, list[str], set[str]]:
    """(config name, overrides, flags given) from a pretrain.py command line."""
    config_name, overrides, flags, args = "cfg_lsa", [], set(), iter(argv)
    for arg in args:
        flag, has_value, value = arg.partition("=")
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flags.add(flag)
        if flag in VALUE_FLAGS and not has_value:
            value = next(args, "")
            if not value or value.startswith("-"):
                raise ConfigError(f"{flag}: needs a value (e.g. {flag} cfg_lsa_cpu)" if flag in ("--config-name", "-cn")
                                  else f"{flag}: needs a value")
        elif flag == "--info" and not has_value:  # an optional topic
            topic = next(args, None)
            if topic is not None and topic not in INFO_TOPICS:
                overrides.append(topic)
        if flag in ("--config-name", "-cn"):
            if not value:
                raise ConfigError(f"{flag}: needs a value (e.g. {flag}=cfg_lsa_cpu)")
            config_name = value
    return config_name, overrides, flags


def hydra_needed(flags: set[str], overrides: list[str]) -> bool:
    """Whether Hydra itself must handle this command line (its flags, its own settings)."""
    return bool(flags - {"--config-name", "-cn"}) or any(o.lstrip("+~").startswith(("hydra.", "hydra/")) for o in overrides)


def run(config_name: str, overrides: list[str]) -> int:
    """Compose, validate, train; returns the exit code. Bad input: one line on stderr, 2."""
    try:
        with interrupt_on_signals():  # start-up too: a signal while importing or composing is one line
            from training.loop import train  # after argv parsing: keeps --help fast

            result = train(validate_config(compose_config(config_name, overrides)))
    except ReportedError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused (a name too long, a read-only or full disk): one line
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 128 + exc.signum
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        print(json.dumps(result))
    return 0


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """`-m` sweeps (`optim.lr=1e-3,3e-3`, `range(...)`, `choice(...)`) as one override list per job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(f"config: {str(exc).strip().splitlines()[0]}") from exc
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in parsed]
    return [list(job) for job in itertools.product(*choices)]


def precheck(argv: list[str]) -> None:
    """Compose and validate before Hydra does, so that an unknown key, a bad value or a missing
    config name is reported on one line (Hydra's own report spans several) whatever the flags:
    a plain run, `--cfg job`, `--info`, and every job of a `-m` sweep."""
    config_name, overrides, flags = parse_argv(argv)
    if flags & set(UNCHECKED_FLAGS):
        return
    overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]  # Hydra's own settings
    sweep = flags & {"-m", "--multirun"}
    for job in expand_sweeps(overrides) if sweep else [overrides]:
        validate_config(compose_config(config_name, job))


def check(argv: list[str]) -> None:
    """--check: validate the config and what the run directory and data allow; start nothing.
    Prints the run directory the run would write (train_lsa.sh reads it)."""
    from training.runs import preflight

    config_name, overrides, _ = parse_argv([a for a in argv if a != "--check"])
    print(preflight(validate_config(compose_config(config_name, overrides))))


def print_help() -> None:
    def first_comment(path: Path, width: int = 84) -> str:
        """The first sentence of the file's leading comment, cut to `width` characters."""
        lines = itertools.takewhile(lambda ln: ln.startswith("#"), path.read_text().splitlines())
        text = " ".join(ln.lstrip("# ").strip() for ln in lines)
        text = text.split(". ")[0].rstrip(".")
        return text if len(text) <= width else text[: width - 3].rsplit(" ", 1)[0] + "..."

    configs = "\n".join(f"  {p.stem:<16} {first_comment(p)}" for p in sorted(CONFIG_DIR.glob("cfg_*.yaml")))
    arches = "\n".join(f"  arch={p.stem:<11} {first_comment(p)}" for p in sorted((CONFIG_DIR / "arch").glob("*.yaml")))
    print(f"""usage: python pretrain.py [--config-name NAME] [KEY=VALUE ...] [--check | --cfg job | -m]

Train a recursive reasoning model. Configs (--config-name, default cfg_lsa):
{configs}

Model variants:
{arches}

Overrides: KEY=VALUE for any key of config/base.yaml (train.max_steps=500, optim.lr=3e-4,
logging.run_name=NAME, train.resume=true|NAME|WANDB_ID|PATH, ...); +KEY=VALUE adds a new key.
Flags:
  --check          validate the config, run directory and data; print the run directory; start nothing
  --cfg job        print the composed config (validated first)
  -m, --multirun   a sweep (KEY=a,b); job N runs as <logging.run_name or sweep-DATE>-N
  --hydra-help     Hydra's own help
See README.md for the tasks, scripts (list, compare, plot, solve, export) and resuming.""")


@hydra.main(config_path="config", config_name="cfg_lsa", version_base=None)
def main(hydra_cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from training.loop import train  # after Hydra parsed argv: keeps --help fast

    try:
        raw = OmegaConf.to_container(hydra_cfg, resolve=True)
        hydra_state = HydraConfig.get()
        if hydra_state.mode == RunMode.MULTIRUN:  # one run per job, named after the sweep and its job number
            base = raw["logging"].get("run_name") or f"sweep-{Path(hydra_state.sweep.dir).name}"
            raw["logging"]["run_name"] = f"{base}-{hydra_state.job.num}"
            print(f"job {hydra_state.job.num}: run {raw['logging']['run_name']} "
                  f"({' '.join(hydra_state.overrides.task)})", flush=True)
        cfg = validate_config(raw)
        result = train(cfg)
    except ReportedError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    print(json.dumps(result))


def cli(argv: list[str]) -> Optional[int]:
    """The command line up to Hydra: an exit code, or None when Hydra itself must run it
    (`--cfg`, `-m`, ...; validated here first). Tests call this in-process."""
    try:
        if {"-h", "--help"} & set(argv):
            print_help()
            return 0
        if "--check" in argv:
            check(argv)
            return 0
        name, overrides, flags = parse_argv(argv)
        if not hydra_needed(flags, overrides):
            return run(name, overrides)
        precheck(argv)
    except ReportedError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return None


if __name__ == "__main__":
    code = cli(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    main()
