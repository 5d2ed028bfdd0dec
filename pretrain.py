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
once; one before the first training step ends the run at once (exit 128 + signal). A closed
stdout or stderr (`... | head`) counts as a first signal (SIGPIPE), its line on stderr (on
stdout when stderr is the closed one; a sweep's line too).
A plain run (no Hydra flag, no hydra.* override) goes through `run()`, which tests also call
in-process; Hydra's own command line (`--cfg`, `-m`, ...) goes through `main()`.
"""

from __future__ import annotations

if __name__ == "__main__":  # first of all: a signal while the imports below run is one line, not a traceback
    import faulthandler

    from core.early_signals import exit_on_signals
    from core.streams import watch_standard_streams

    exit_on_signals()
    watch_standard_streams()  # `| head`: output to a closed pipe is dropped quietly; training takes it as a stop
    faulthandler.enable()  # a crash below Python (SIGSEGV, SIGABRT) prints where each thread was

import argparse
import functools
import itertools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

import hydra
from omegaconf import DictConfig, OmegaConf

from core.errors import ReportedError, one_line, os_error_line
from core.signals import Interrupted, interrupt_on_signals
from core.streams import closed_streams, reporting_stream
from training.config import CONFIG_DIR, ConfigError, validate_config
from training.hydra_guard import ConfigSearch, compose_config

INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def split_argv(argv: list[str]) -> tuple[str, list[str], set[str], list[str]]:
    """(config name, overrides, flags given, the flags' own words in order) from a pretrain.py
    command line."""
    config_name, overrides, flags, flag_words, args = "cfg_lsa", [], set(), [], iter(argv)
    for arg in args:
        flag, has_value, value = arg.partition("=")
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        flags.add(flag)
        flag_words.append(arg)
        if takes_value(flag) and not has_value:
            value = next(args, "")
            if not value or value.startswith("-"):
                raise ConfigError(f"{flag}: needs a value (e.g. {flag} cfg_lsa_cpu)" if flag in ("--config-name", "-cn")
                                  else f"{flag}: needs a value")
            flag_words.append(value)
        elif flag in ("--info", "-i") and not has_value:  # an optional topic
            topic = next(args, None)
            if topic is not None and topic not in INFO_TOPICS:
                overrides.append(topic)
            elif topic is not None:
                flag_words.append(topic)
        if flag in ("--config-name", "-cn"):
            if not value:
                raise ConfigError(f"{flag}: needs a value (e.g. {flag}=cfg_lsa_cpu)")
            config_name = value
    return config_name, overrides, flags, flag_words


@functools.cache
def hydra_flag_arity() -> dict[str, Any]:
    """Each of Hydra's own flags -> its argparse nargs (None: one value, "?": optional, 0: none),
    read from the parser @hydra.main uses (the hydra path re-reads argv with it)."""
    from hydra._internal.utils import get_args_parser

    return {option: action.nargs for action in get_args_parser()._actions for option in action.option_strings}


def takes_value(flag: str) -> bool:
    """A Hydra flag that takes a value (`--cfg job`), given whole or, as argparse allows, as a
    unique prefix of a long option (`--config-n`)."""
    arity = hydra_flag_arity()
    if flag not in arity and flag.startswith("--"):
        matches = [option for option in arity if option.startswith("--") and option.startswith(flag)]
        flag = matches[0] if len(matches) == 1 else flag
    return flag in arity and arity[flag] is None


def parse_argv(argv: list[str]) -> tuple[str, list[str], set[str]]:
    """(config name, overrides, flags given) from a pretrain.py command line."""
    return split_argv(argv)[:3]


def flags_first(argv: list[str]) -> list[str]:
    """The same command line with the overrides together, then every flag (and its value), each
    group in its own order: Hydra's parser takes the overrides as one run of words, so `A=1 -m
    B=1,2` would leave `B=1,2` unrecognised (and a bare `--info` takes no override as its topic
    when it comes last)."""
    _, overrides, _, flag_words = split_argv(argv)
    return overrides + flag_words


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
    except Interrupted as exc:  # a closed stderr stopped it: the line goes to stdout
        print(f"error: {exc}", file=reporting_stream("stderr"))
        return 128 + exc.signum
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        print(json.dumps(result))
    return 0


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """`-m` sweeps (`optim.lr=1e-3,3e-3`, `range(...)`, `choice(...)`) as one override list per job
    (at most training.hydra_guard.MAX_SWEEP_JOBS; glob() needs a config group: see precheck)."""
    from training.hydra_guard import ConfigSearch, plan_sweep, parse_overrides

    _, columns = plan_sweep(parse_overrides(overrides, ConfigSearch()))
    return [list(job) for job in itertools.product(*columns)]


def hydra_args(argv: list[str]) -> argparse.Namespace:
    """argv as @hydra.main will read it (its own parser: abbreviations such as --experimental-r
    included); a usage error is one line."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str) -> NoReturn:
        raise ConfigError(f"pretrain.py: {message}")

    parser.error = error  # type: ignore[method-assign]
    return parser.parse_args(argv)


def precheck(argv: list[str]) -> None:
    """Everything Hydra would act on, checked before it does (training/hydra_guard.py): flags that
    run code (--experimental-rerun), the config directories, every override and the composed
    config of every job (hydra section included: callbacks, launcher, sweeper, logging, search
    path), then the project's own validation. A `-m` sweep is counted from its overrides before
    any job is composed, then each job is composed and validated before the first one runs."""
    from hydra.types import RunMode

    from training.hydra_guard import (
        REFUSED, ConfigSearch, check_override, compose, parse_overrides, plan_sweep, project_part, sweeper_params,
    )

    args = hydra_args(argv)
    if args.experimental_rerun is not None:
        raise ConfigError(f"--experimental-rerun {args.experimental_rerun}: refused (it unpickles the file, which can "
                          "run any code); run the command line again instead")
    commands = [name for name, given in (("--run", args.run), ("--multirun", args.multirun), ("--cfg", args.cfg),
                                         ("--info", args.info), ("--shell-completion", args.shell_completion)) if given]
    if len(commands) > 1:
        raise ConfigError(f"{' and '.join(commands)}: give only one of --run, --multirun, --cfg, --info and "
                          "--shell-completion")
    search = ConfigSearch.from_flags(args.config_path, args.config_dir)
    name = args.config_name or "cfg_lsa"
    if args.shell_completion:  # its arguments (install=bash) are not overrides; the config is still checked
        if "searchpath" in os.environ.get("COMP_LINE", ""):  # a completion query composes the line it completes
            raise ConfigError(f"--shell-completion: COMP_LINE sets hydra.searchpath: {REFUSED['hydra.searchpath']}")
        compose(search, name, [])
        return
    parsed = parse_overrides(args.overrides, search)
    for override in parsed:
        check_override(override)
    if args.multirun:
        plan_sweep(parsed)  # counted before anything is composed
    sweeps = [o for o in parsed if o.is_sweep_override()]
    cfg = compose(search, name, [o.input_line for o in parsed if not o.is_sweep_override()])
    if not (args.multirun or cfg.hydra.mode == RunMode.MULTIRUN):
        if sweeps:
            raise ConfigError(f"{sweeps[0].input_line}: a sweep; add -m to run one job per value (or write "
                              f"{sweeps[0].get_key_element()}=[a,b] for a list)")
        validated(project_part(cfg), search, name)
        return
    params = sweeper_params(cfg)
    for override in parse_overrides(params, search):
        check_override(override, where=f"config {name}: hydra.sweeper.params")
    _, columns = plan_sweep(parse_overrides(params + args.overrides, search))
    for number, job in enumerate(itertools.product(*columns)):  # lazily: at most MAX_SWEEP_JOBS, each checked
        validated(project_part(compose(search, name, list(job))), search, name, f"-m job {number} ({' '.join(job)})")


def validated(raw: dict, search: "ConfigSearch", name: str, job: str = "") -> None:
    """validate_config, its one line prefixed with the sweep job and the --config-dir config it came from."""
    where = [job] if job else []
    if search.extra_dir is not None or search.main_dir != CONFIG_DIR:
        where.append(f"config {name} from {search.where()}")
    try:
        validate_config(raw)
    except ConfigError as exc:
        if not where:
            raise
        raise ConfigError(f"{', '.join(where)}: {exc}") from exc


def check(argv: list[str]) -> None:
    """--check: validate the config and what the run directory and data allow; start nothing.
    Prints the run directory the run would write (train_lsa.sh reads it)."""
    from training.hydra_guard import ConfigSearch
    from training.bookkeeping.run import preflight

    args = hydra_args(flags_first([a for a in argv if a != "--check"]))
    if args.experimental_rerun is not None or args.multirun:
        raise ConfigError("--check: checks one run; give no -m or --experimental-rerun")
    search = ConfigSearch.from_flags(args.config_path, args.config_dir)
    print(preflight(validate_config(compose_config(args.config_name or "cfg_lsa", args.overrides, search))))


def print_help() -> None:
    from models import MODELS

    def first_sentence(text: str, width: int = 84) -> str:
        """The first sentence of a text, cut to `width` characters."""
        text = " ".join(text.split()).split(". ")[0].rstrip(".")
        return text if len(text) <= width else text[: width - 3].rsplit(" ", 1)[0] + "..."

    def first_comment(path: Path) -> str:
        """The first sentence of the file's leading comment."""
        lines = itertools.takewhile(lambda ln: ln.startswith("#"), path.read_text().splitlines())
        return first_sentence(" ".join(ln.lstrip("# ").strip() for ln in lines))

    configs = "\n".join(f"  {p.stem:<16} {first_comment(p)}" for p in sorted(CONFIG_DIR.glob("cfg_*.yaml")))
    variants = {name: first_sentence(config.__doc__ or "") for name, (config, _) in MODELS.items()}  # the registry's
    variants.update({p.stem: first_comment(p) for p in (CONFIG_DIR / "arch").glob("*.yaml")})  # and config/arch/
    arches = "\n".join(f"  arch={name:<11} {text}" for name, text in sorted(variants.items()))
    print(f"""usage: python pretrain.py [--config-name NAME] [KEY=VALUE ...] [--check | --cfg job | -m]

Train a recursive reasoning model. Configs (--config-name, default cfg_lsa):
{configs}

Model variants:
{arches}

Devices (the task configs cfg_lsa, cfg_sudoku, cfg_arith, cfg_arith_lengen, cfg_maze):
  device=gpu       the task's own recipe (the default)
  device=cpu       its CPU preset: a small model and dataset (cfg_<task>_cpu is the same)

Overrides: KEY=VALUE for any key of the config (--cfg job prints them all, with their values;
the defaults are the typed models' in training/config.py and models/): train.max_steps=500,
optim.lr=3e-4, logging.run_name=NAME, train.resume=true|NAME|WANDB_ID|PATH, ...; +KEY=VALUE adds a new key.
Flags:
  --check          validate the config, run directory and data; print the run directory; start nothing
  --cfg job        print the composed config (validated first)
  -m, --multirun   a sweep (KEY=a,b); job N runs as <logging.run_name or sweep-DATE>-N
  --hydra-help     Hydra's own help
See README.md to start, docs/USAGE.md for tasks, configuration and resuming, docs/TOOLS.md for the run tools.""")


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
        print(f"error: {exc}", file=reporting_stream("stderr"))
        sys.exit(128 + exc.signum)
    # A signal (pre-emption, Ctrl-C) stops a -m sweep, not only its current job: the jobs after it
    # are not started, and the process exits 0 as a stopped single run does.
    end_sweep = hydra_state.mode == RunMode.MULTIRUN and (result.get("preempted") or result.get("signal") is not None)
    if end_sweep:
        job = [o for o in hydra_state.overrides.task if not o.startswith("logging.run_name=")]
        again = " ".join(["python pretrain.py --config-name", hydra_state.job.config_name or "cfg_lsa", *job,
                          f"logging.run_name={raw['logging']['run_name']}", "train.resume=true"])
        closed = closed_streams() if result.get("signal") == signal.SIGPIPE else []
        cause = f"a closed {closed[0]}" if closed else "a signal"
        # On stdout, or on stderr when stdout has no reader (what stopped the sweep, often): it says
        # which jobs did not run and how to continue this one.
        print(f"sweep stopped at job {hydra_state.job.num} by {cause}: the jobs after it were not started"
              + (f"; continue this job with: {again}" if result.get("preempted") else ""),
              file=reporting_stream("stdout"), flush=True)
    print(json.dumps(result))
    if end_sweep:
        sys.exit(0)


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
        precheck(flags_first(argv))
    except ReportedError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # --check reads the run directory: a refusal there is one line, as in a run
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    return None


if __name__ == "__main__":
    code = cli(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    sys.argv[1:] = flags_first(sys.argv[1:])  # as precheck read it (cli has refused a malformed one)
    main()
