"""What Hydra may do for pretrain.py, checked before Hydra acts on a config.

Hydra runs code that a config names: `_target_` nodes (`hydra.callbacks`, nested launcher and
sweeper arguments), logging dictConfig (`()` factories, `class:` handlers, `ext://` imports),
search paths (`pkg://` imports a package), `hydra.job.env_set` (the environment of the
compiler's subprocesses: CXX, LD_PRELOAD) and `--experimental-rerun` (unpickles a file).
Training needs none of it, so each is refused with one line naming the override or file and
the key, before Hydra composes anything itself: this module composes with Hydra's own loader and
the same search path as `@hydra.main`, and a `-m` sweep is counted before any job is composed.
`compose_config` is the one composition every entry point uses (pretrain.py --check, the scripts,
tests): config/ or --config-dir, overrides, Hydra's errors as one line (`composition_error`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from core.dicts import flatten
from models import field_hint
from training.config import CONFIG_DIR, ConfigError, did_you_mean

# Keys that make hydra.utils.instantiate call something; no config of this project needs them.
CODE_KEYS = frozenset({"_target_", "_partial_", "_args_", "_recursive_", "_convert_"})
CODE_KEY_WHY = "names code for Hydra to instantiate; pretrain.py refuses it"
# The only launcher and sweeper: Hydra's basic ones (jobs run one after another in this process).
LAUNCHER = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
SWEEPER_TARGET = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
SWEEPER_KEYS = frozenset({"_target_", "max_batch_size", "params"})
# Logging configs (hydra.job_logging, hydra.hydra_logging) may name only these classes and streams.
LOGGING_CLASSES = frozenset({"logging.StreamHandler", "logging.FileHandler", "logging.NullHandler", "logging.Formatter"})
LOGGING_STREAMS = frozenset({"ext://sys.stdout", "ext://sys.stderr"})
LOGGING_INTERPOLATION = re.compile(r"\$\{hydra[.:](runtime|job)\.[A-Za-z0-9_.]+\}")  # Hydra's default log file name
# File handlers write (and with mode "w" empty) the file they name: only a .log file directly in Hydra's
# output dir, appended to. hydra.job.name may appear in the name (Hydra's default: ${hydra.job.name}.log).
FILE_HANDLERS = frozenset({"logging.FileHandler", "logging.handlers.RotatingFileHandler",
                           "logging.handlers.TimedRotatingFileHandler", "logging.handlers.WatchedFileHandler"})
LOG_FILE = re.compile(r"\$\{hydra[.:]runtime\.output_dir\}/(?:[A-Za-z0-9_.-]|\$\{hydra[.:]job\.name\})+\.log")
JOB_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
BASIC_ONLY = "pretrain.py runs sweeps with Hydra's basic launcher and sweeper only (their classes are fixed)"
REFUSED = {  # override keys (and config groups) that are refused, with why
    "hydra.callbacks": "Hydra instantiates callbacks from their _target_ (code named by a config); refused",
    "hydra/callbacks": "Hydra instantiates callbacks from their _target_ (code named by a config); refused",
    "hydra.launcher": BASIC_ONLY, "hydra/launcher": BASIC_ONLY,
    "hydra.sweeper": BASIC_ONLY, "hydra/sweeper": BASIC_ONLY,
    "hydra.searchpath": "a search path can import a package (pkg://); put your configs in one --config-dir",
    "hydra.job.env_set": "it sets environment variables that choose programs to run (CXX, LD_PRELOAD); "
                         "set them in the shell if you mean it",
}
MAX_SWEEP_JOBS = 1000  # a larger -m sweep is refused before any job is composed
CONFIG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")  # a name or a path inside the dir


@dataclass
class ConfigSearch:
    """Where configs come from: the main directory (config/, or --config-path) and an extra one
    (--config-dir), searched in the order @hydra.main searches them."""

    main_dir: Path = CONFIG_DIR
    extra_dir: Optional[Path] = None
    _loader: Any = field(default=None, repr=False)

    @classmethod
    def from_flags(cls, config_path: Optional[str], config_dir: Optional[str]) -> "ConfigSearch":
        """--config-path is a directory (absolute, or relative to pretrain.py); --config-dir one
        relative to the working directory. A package (pkg://) would be imported: refused."""
        main = CONFIG_DIR
        if config_path is not None:
            if "://" in config_path:
                raise ConfigError(f"--config-path {config_path}: give a directory; a package or URL path "
                                  "(pkg://) would import code")
            main = (CONFIG_DIR.parent / config_path).resolve()
            if not main.is_dir():
                raise ConfigError(f"--config-path {config_path}: no such directory ({main})")
        extra = None
        if config_dir is not None:
            if "://" in config_dir:
                raise ConfigError(f"--config-dir {config_dir}: give a directory, not a URL")
            extra = Path(os.path.abspath(config_dir))
            if not extra.is_dir():
                raise ConfigError(f"--config-dir {config_dir}: no such directory ({extra})")
        return cls(main, extra)

    @property
    def dirs(self) -> list[Path]:
        return [self.main_dir] + ([self.extra_dir] if self.extra_dir is not None else [])

    def where(self) -> str:
        return " or ".join(str(d) for d in self.dirs)

    @property
    def loader(self) -> Any:
        """Hydra's config loader on this search path (the one @hydra.main builds, no plugins' pkg:// sources
        beyond Hydra's own)."""
        if self._loader is None:
            from hydra._internal.config_loader_impl import ConfigLoaderImpl
            from hydra._internal.utils import create_config_search_path
            from hydra.core.config_search_path import SearchPathQuery

            search_path = create_config_search_path(str(self.main_dir))
            if self.extra_dir is not None:  # where _run_hydra puts --config-dir
                search_path.prepend(provider="command-line", path=f"file://{self.extra_dir}",
                                    anchor=SearchPathQuery(provider="schema"))
            self._loader = ConfigLoaderImpl(config_search_path=search_path)
        return self._loader

    def config_names(self) -> list[str]:
        return sorted({p.stem for d in self.dirs for p in d.glob("*.yaml") if p.stem != "base"})

    def check_name(self, config_name: str) -> None:
        """A config name names a config in the search path; a path elsewhere is refused."""
        if not CONFIG_NAME.fullmatch(config_name or "") or ".." in config_name:
            raise ConfigError(f"--config-name {config_name!r}: the name of a config in {self.where()} (e.g. cfg_lsa), "
                              "not a path; for configs elsewhere use --config-dir")

    def primary(self, config_name: str) -> Any:
        """The primary config file as written (before its defaults), or a one-line error naming the dirs."""
        self.check_name(config_name)
        loaded = self.loader.repository.load_config(config_name)
        if loaded is None:
            raise ConfigError(f"--config-name {config_name}: no such config in {self.where()}; available: "
                              f"{', '.join(self.config_names())}")
        return loaded


OVERRIDE_SYNTAX = "KEY=VALUE, +KEY=VALUE to add a key, ~KEY to delete one"


def parse_overrides(overrides: list[str], search: Optional[ConfigSearch] = None) -> list[Any]:
    """Hydra's parsed overrides (sweep objects included), one word at a time: a syntax error, or
    a word without a key (`=5`, `+=1`, `~`, which Hydra takes for a config group named ''), is one
    line naming the word."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create(config_loader=search.loader if search else None)
    parsed = []
    for word in overrides:
        try:
            parsed += parser.parse_overrides([word])
        except HydraException as exc:
            raise ConfigError(f"config: override {word!r}: {syntax_problem(str(exc), word)}; an override is "
                              f"{OVERRIDE_SYNTAX}") from exc
        if not parsed[-1].key_or_group:
            raise ConfigError(f"config: override {word!r}: no key; an override is {OVERRIDE_SYNTAX}")
    return parsed


def syntax_problem(message: str, word: str) -> str:
    """Hydra's parse error as one clause: its reason, without the word it repeats, the caret
    line (a character position instead) or the link to the grammar. The word is taken off before
    the message is split into lines: it may hold a line break of its own (a newline, `\r`)."""
    lexer = "LexerNoViableAltException: "
    header = f"Error parsing override '{word}'"
    if message.startswith(lexer + word + "\n"):
        caret = message[len(lexer + word) + 1:].partition("\n")[0]
        at = caret.find("^") - len(lexer)
        if caret.strip() == "^" and 0 <= at < len(word):
            return f"unexpected character {word[at]!r} at position {at + 1}"
    elif message.startswith(header + "\n"):
        message = message[len(header) + 1:]
    lines = [line for line in message.splitlines() if line.strip() and not line.strip().startswith("See https://")]
    if not lines:
        return "cannot be parsed"
    return lines[0].strip()


def key_paths(value: Any, prefix: str) -> Iterator[str]:
    """Every dotted key path inside a value (dicts within lists included), starting with `prefix`."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from key_paths(item, f"{prefix}.{key}")
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from key_paths(item, prefix)


def refused_key(path: str) -> Optional[str]:
    """Why a key path (dotted, or a config group with /) may not be set, or None."""
    path = path.lstrip("+~")
    for part in re.split(r"[./@]", path):
        if part in CODE_KEYS or part == "()":
            return f"{part} {CODE_KEY_WHY}"
    for prefix, why in REFUSED.items():
        if path == prefix or path.startswith((prefix + ".", prefix + "/")):
            return why
    return None


def override_values(override: Any) -> list[Any]:
    """The values an override sets: the one value, or each of a choice sweep."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    return list(value.list) if isinstance(value, ChoiceSweep) else [value]


def check_override(override: Any, where: str = "override") -> None:
    """Refuse an override that sets a key or value which names code (at any depth), a Hydra
    door listed in REFUSED, or a package (`@`) that puts a group there."""
    key = override.key_or_group
    paths = [p for v in override_values(override) for p in key_paths(v, key)]
    if override.package:
        paths.append(override.package)
    # the deepest first: a _target_ inside hydra.callbacks.x is named as such
    for path in sorted(paths, key=lambda p: -p.count(".")):
        why = refused_key(path)
        if why:
            raise ConfigError(f"{where} {override.input_line}: {path.lstrip('+~')}: {why}")


def count_jobs(override: Any) -> int:
    """How many values a sweep override gives, without listing a range (10**8 values cost nothing)."""
    from hydra.core.override_parser.types import ChoiceSweep, Glob, IntervalSweep, RangeSweep

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return len(value.list)
    if isinstance(value, RangeSweep):
        if not value.step:
            raise ConfigError(f"-m {override.input_line}: a range with step 0 never ends")
        span = (value.stop - value.start) / value.step
        if not math.isfinite(span):
            raise ConfigError(f"-m {override.input_line}: a range without a finite number of values")
        estimate = max(0, math.ceil(span))
        return estimate if estimate > MAX_SWEEP_JOBS else sum(1 for _ in override.sweep_string_iterator())
    if isinstance(value, Glob):
        return sum(1 for _ in override.sweep_string_iterator())
    if isinstance(value, IntervalSweep):
        raise ConfigError(f"-m {override.input_line}: interval() is a continuous range, which Hydra's basic sweeper "
                          "(the one pretrain.py uses) cannot run; list values (a,b,c) or use range() or choice()")
    raise ConfigError(f"-m {override.input_line}: {type(value).__name__} sweeps are not supported "
                      "(use a,b,c, range(), choice() or glob() over a config group)")


def plan_sweep(parsed: list[Any]) -> tuple[int, list[list[str]]]:
    """(number of jobs, each sweep's override strings), Hydra's basic sweeper's way: the config's
    hydra.sweeper.params first, then the command line, one entry per key (the last wins).
    More than MAX_SWEEP_JOBS jobs, or none, is refused before any job is composed."""
    by_key: dict[str, Any] = {}
    for override in parsed:
        by_key[override.get_key_element()] = override
    counts = {key: count_jobs(o) if o.is_sweep_override() else 1 for key, o in by_key.items()}
    total = math.prod(counts.values())
    if total == 0:
        key = min(counts, key=counts.get)
        hint = " (glob() picks among the options of a config group, such as arch)" if "glob(" in by_key[key].input_line else ""
        raise ConfigError(f"-m {by_key[key].input_line}: gives no values, so the sweep has no jobs{hint}")
    if total > MAX_SWEEP_JOBS:
        key = max(counts, key=counts.get)
        raise ConfigError(f"-m: the sweep has {total} jobs ({by_key[key].input_line} gives {counts[key]}); at most "
                          f"{MAX_SWEEP_JOBS} are allowed (MAX_SWEEP_JOBS in training/hydra_guard.py)")
    columns = [[f"{key}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
               for key, o in by_key.items()]
    return total, columns


def sweeper_params(cfg: Any) -> list[str]:
    """hydra.sweeper.params of a composed config as override strings (Hydra's basic sweeper adds them)."""
    from omegaconf import OmegaConf

    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    if not params:
        return []
    return [f"{k}={v}" for k, v in OmegaConf.to_container(params, resolve=False).items()]


def walk(node: Any, prefix: str) -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every key under a plain container."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path, key, value
            yield from walk(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{prefix}[{i}]")


def file_handler_problem(hydra: dict, section: str) -> Optional[tuple[str, str]]:
    """(key path, why) for a file handler in a logging section that could write outside Hydra's output
    dir or empty a file (mode 'w'), or None. Hydra configures job logging before training starts."""
    handlers = (hydra.get(section) or {}).get("handlers") or {}
    if not isinstance(handlers, dict):
        return None
    for name, handler in handlers.items():
        if not isinstance(handler, dict) or handler.get("class") not in FILE_HANDLERS:
            continue
        path = f"hydra.{section}.handlers.{name}"
        filename = handler.get("filename")
        if not isinstance(filename, str) or not LOG_FILE.fullmatch(filename) or ".." in filename:
            return f"{path}.filename", (f"{filename!r}: a log file must be a .log file directly in Hydra's output dir, "
                                        "written as ${hydra.runtime.output_dir}/<name>.log (no '..')")
        if handler.get("mode", "a") != "a":
            return f"{path}.mode", f"{handler['mode']!r}: a log file is only appended to (mode 'a' or none)"
        job_name = (hydra.get("job") or {}).get("name")
        if "job.name" in filename and job_name not in (None, "???") and (
                not isinstance(job_name, str) or not JOB_NAME.fullmatch(job_name) or ".." in job_name):
            return "hydra.job.name", f"{job_name!r}: it names the log file {filename}; give a plain name (no '/', no '..')"
    return None


def composed_problem(raw: dict) -> Optional[tuple[str, str]]:
    """(key path, why) for the first thing in a composed config (hydra section included, not
    resolved) that would make Hydra run code, or None."""
    hydra = raw.get("hydra") or {}
    pinned = {"hydra.launcher._target_", "hydra.sweeper._target_"}
    for path, key, value in walk(raw, ""):
        if (key in CODE_KEYS or key == "()") and path not in pinned:
            return path, f"{key} {CODE_KEY_WHY}"
    if hydra.get("launcher") not in (None, LAUNCHER):
        return "hydra.launcher", f"{hydra['launcher']}: {BASIC_ONLY}"
    sweeper = hydra.get("sweeper") or {}
    if sweeper and (sweeper.get("_target_") != SWEEPER_TARGET or set(sweeper) - SWEEPER_KEYS):
        return "hydra.sweeper", f"{sweeper}: {BASIC_ONLY}"
    for key in ("callbacks", "searchpath"):
        if hydra.get(key):
            return f"hydra.{key}", f"{hydra[key]}: {REFUSED['hydra.' + key]}"
    if (hydra.get("job") or {}).get("env_set"):
        return "hydra.job.env_set", f"{hydra['job']['env_set']}: {REFUSED['hydra.job.env_set']}"
    if hydra.get("output_subdir") is not None:  # the `base` config sets null; training records config.json itself
        return "hydra.output_subdir", (f"{hydra['output_subdir']!r}: Hydra would write config.yaml, hydra.yaml and "
                                       "overrides.yaml there (over any files of those names); pretrain.py keeps it null")
    for section in ("job_logging", "hydra_logging"):
        problem = file_handler_problem(hydra, section)
        if problem:
            return problem
        for path, key, value in walk(hydra.get(section) or {}, f"hydra.{section}"):
            if key == ".":
                return path, "sets attributes on logging objects; refused"
            if key == "class" and value not in LOGGING_CLASSES:
                return path, f"{value!r}: a logging class may be one of {', '.join(sorted(LOGGING_CLASSES))}"
            if isinstance(value, str) and "ext://" in value and value not in LOGGING_STREAMS:
                return path, f"{value!r}: ext:// imports a module; only {', '.join(sorted(LOGGING_STREAMS))} are allowed"
            if isinstance(value, str) and "${" in value and LOGGING_INTERPOLATION.sub("", value).count("${"):
                return path, (f"{value!r}: interpolations in a logging config may refer only to hydra.runtime or "
                              "hydra.job (another value could name a module to import)")
    return None


def has_path(node: Any, dotted: str) -> bool:
    """Whether a plain container holds the dotted key path."""
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def source_of(search: ConfigSearch, config_name: str, overrides: list[Any], path: str) -> str:
    """The override or the config file that set `path` (for the one-line error)."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    bare = path.split("[")[0]
    for override in overrides:
        key = (override.package or override.key_or_group).lstrip("+~").replace("/", ".")
        if bare == key or bare.startswith(key + ".") or key.startswith(bare + "."):
            return f"override {override.input_line}"
    try:
        defaults = search.loader.compute_defaults_list(config_name, [o.input_line for o in overrides], _run_mode())
    except HydraException:  # composition succeeded a moment ago; should this fail, name the config alone
        return f"config {config_name}"
    for default in reversed(defaults.defaults):
        loaded = search.loader.repository.load_config(default.config_path) if default.config_path else None
        if loaded is None or loaded.provider in ("hydra", "schema"):  # Hydra's own, or training.config's ConfigStore
            continue
        package = default.package or ""
        if package and bare == package:  # the file is the whole node (a group option placed there)
            return f"{loaded.path.split('://', 1)[-1]}/{default.config_path}.yaml"
        if package and not bare.startswith(package + "."):
            continue
        if has_path(OmegaConf.to_container(loaded.config, resolve=False), bare[len(package) + 1:] if package else bare):
            return f"{loaded.path.split('://', 1)[-1]}/{default.config_path}.yaml"
    return f"config {config_name}"


def _run_mode() -> Any:
    from hydra.types import RunMode

    return RunMode.RUN


def compose(search: ConfigSearch, config_name: str, overrides: list[str]) -> Any:
    """Compose one job with Hydra's loader (hydra section included) after refusing every door:
    the overrides, the primary file's search path, then the composed result. Returns the DictConfig."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    parsed = parse_overrides(overrides, search)
    for override in parsed:
        check_override(override)
    check_group_choices(parsed, search)
    primary = search.primary(config_name)
    written = OmegaConf.to_container(primary.config, resolve=False) if OmegaConf.is_dict(primary.config) else {}
    if isinstance(written.get("hydra"), dict) and written["hydra"].get("searchpath"):
        raise ConfigError(f"{primary.path.split('://', 1)[-1]}/{config_name}.yaml: hydra.searchpath: "
                          f"{REFUSED['hydra.searchpath']}")
    try:
        cfg = search.loader.load_configuration(config_name, overrides, run_mode=_run_mode(), from_shell=True)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise composition_error(exc, config_name, overrides, search) from exc
    problem = composed_problem(OmegaConf.to_container(cfg, resolve=False))
    if problem:
        path, why = problem
        raise ConfigError(f"{source_of(search, config_name, parsed, path)}: {path}: {why}")
    return cfg


def project_part(cfg: Any) -> dict[str, Any]:
    """The composed config without Hydra's own section, resolved (what validate_config takes)."""
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except (OmegaConfBaseException, ValueError) as exc:
        raise composition_error(exc, "", [], None) from exc


def check_group_choices(parsed: list[Any], search: ConfigSearch) -> None:
    """A config group's override picks one of its options by name: a path (`device=lsa/cpu`,
    `device=../arch/trm_mlp`) would load a file that is not an option of the group, so it is refused,
    as is a name with a line break or another unprintable character (Hydra's error cut its line there)."""
    groups = config_groups(search.dirs)
    for override in parsed:
        group = override.key_or_group.lstrip("+~")
        if override.package or group not in groups:
            continue
        for value in override_values(override):
            if isinstance(value, str) and ("/" in value or "\\" in value or ".." in value or not value.isprintable()):
                raise ConfigError(f"override {override.input_line!r}: {value!r} is not an option of the config group "
                                  f"{group}; choose one of {', '.join(group_options(search.dirs, group))}")


def group_options(dirs: list[Path], group: str) -> list[str]:
    """The options of a config group: YAML files in the config directories and ConfigStore entries."""
    from hydra.core.config_store import ConfigStore

    files = {p.stem for d in dirs for p in (d / group).glob("*.yaml")} if group else set()
    try:
        stored = {n.removesuffix(".yaml") for n in ConfigStore.instance().list(group)} if group else set()
    except OSError:  # ConfigStore.list raises IOError for a path it does not hold
        stored = set()
    return sorted(files | stored)


def config_groups(dirs: list[Path]) -> set[str]:
    """The config groups: folders of the config directories and the ConfigStore's groups (Hydra's own aside)."""
    from hydra.core.config_store import ConfigStore

    stored = {n for n in ConfigStore.instance().list("") if not n.endswith(".yaml") and n != "hydra"}
    return {p.name for d in dirs for p in d.iterdir() if p.is_dir()} | stored


def compose_config(config_name: str, overrides: list[str], search: Optional[ConfigSearch] = None) -> dict[str, Any]:
    """Compose <config_name>.yaml (from config/, or `search`: a ConfigSearch for
    --config-path/--config-dir) with Hydra overrides into a plain dict, after refusing what would
    make Hydra run code (above); Hydra's composition errors (unknown key, missing
    config, bad override syntax) become one-line ConfigErrors."""
    return project_part(compose(search or ConfigSearch(), config_name, overrides))


def composition_error(exc: Exception, config_name: str, overrides: list[str], search: Optional[ConfigSearch]) -> ConfigError:
    """Hydra's (several-line) composition error as one line naming the config, key or group."""
    dirs = search.dirs if search is not None else [CONFIG_DIR]
    text = str(exc)
    for word in overrides:  # Hydra quotes a word whole ('optim.lr=1,"x<newline>y"'): a line break in it cut the line
        if not word.isprintable():
            text = text.replace(f"'{word}'", repr(word))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[0] if lines else type(exc).__name__
    if "Cannot find primary config" in message:
        names = sorted({p.stem for d in dirs for p in d.glob("cfg_*.yaml")})
        message = f"--config-name {config_name}: no such config; available: {', '.join(names)}"
    elif "Available options" in str(exc):
        group = message.split("'")[-2].split("/")[0] if "'" in message else ""
        message = f"{message}; available: {', '.join(group_options(dirs, group))}"
    elif message.startswith("Could not override"):
        key = message.split("'")[1]
        group_dirs = config_groups(dirs)  # arch=hrm: its keys (never the word that failed: `foo=1` is no group)
        groups = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in group_dirs]
        try:
            composed = compose_config(config_name, groups, search)
        except ConfigError:
            composed = {}
        arch = composed.get("arch")
        hint = (field_hint(arch.get("name"), key.split(".", 1)[1])  # another family's field: say which
                if key.startswith("arch.") and key.count(".") == 1 and isinstance(arch, dict) else "")
        hint = hint or did_you_mean(key, list(flatten(composed)))
        message = f"{key}: no such config key{hint} (to add a new key, write +{key}=...)"
    elif len(lines) > 1 and lines[0].startswith("Error parsing override"):
        message = f"{lines[0]}: {lines[1]}"
    elif message.endswith(":") and len(lines) > 1:  # "In 'cfg': ConfigKeyError raised while composing config:"
        full_key = [line.split(":", 1)[1].strip() for line in lines if line.startswith("full_key:")]
        message = f"{message} {lines[1]}" + (f" (key {full_key[0]})" if full_key else "")
    elif "Config group override" in message:  # e.g. arch=null
        group_dirs = config_groups(dirs)
        groups = [o.split("=", 1)[0].lstrip("+~") for o in overrides if o.split("=", 1)[0].lstrip("+~") in group_dirs]
        for group in groups[:1]:
            message = f"{group}: {message}; choose one of {', '.join(group_options(dirs, group))}"
    return ConfigError(f"config: {message}")
