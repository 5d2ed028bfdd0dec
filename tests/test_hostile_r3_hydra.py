"""Hostile input, round three: Hydra's own doors (issue 17, item 2).

Hydra runs code that a config or an override names (`_target_` callbacks, launchers and
sweepers, logging `()` factories and `class:` handlers, `pkg://` search paths, `env_set`),
unpickles `--experimental-rerun` files, and expands a `-m` sweep in full before the first job.
pretrain.py refuses each before Hydra acts: one line naming the override or file and the key,
exit 2, and nothing written (the payloads below would create a marker directory; it must not
exist afterwards). Cases run in this process through `pretrain.cli`, the same entry `__main__`
uses; a few run in a subprocess for the command-line contract (Hydra itself takes over there).
"""

import os
import pickle
import textwrap

import pytest

from conftest import REPO, assert_one_line_error, dir_digest, run_in_process, run_module

MARKER = "MARKER"  # a directory the payloads would create (os.makedirs) in the test's tmp_path


class Payload:
    """A pickle that, once loaded, creates the marker: what --experimental-rerun would run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def config_dir(t, **files: str):
    """A --config-dir under tmp_path holding `files` (name -> YAML; '/' in a name is a subfolder)."""
    root = t / "confs"
    for name, text in files.items():
        path = root / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).replace("@MARKER@", str(t / MARKER)))
    return root


def on_cpu_preset(body: str) -> str:
    """A config in a --config-dir that extends the shipped cfg_lsa_cpu with `body`."""
    return "defaults:\n  - cfg_lsa_cpu\n  - _self_\n" + textwrap.dedent(body)


def with_dir(body: str, *argv: str, extra: dict | None = None):
    def setup(t):
        root = config_dir(t, evil=on_cpu_preset(body), **(extra or {}))
        return ["--config-dir", str(root), "--config-name", "evil", *argv]
    return setup


def plain(*argv: str):
    return lambda t: ["--config-name", "cfg_lsa_cpu", *argv]


def rerun_pickle(flag: str):
    def setup(t):
        path = t / "rerun.pickle"
        path.write_bytes(pickle.dumps(Payload(str(t / MARKER))))
        return [flag, str(path)]
    return setup


CALLBACK = """
hydra:
  callbacks:
    x:
      _target_: os.makedirs
      name: @MARKER@
"""
LOG_FACTORY = """
hydra:
  job_logging:
    version: 1
    handlers:
      x:
        (): os.makedirs
        name: @MARKER@
    root:
      handlers: [x]
"""

# name -> (setup(tmp_path) -> argv after pretrain.py, culprits the one error line must name)
CASES = {
    # overrides
    "override callback _target_": (plain("--cfg", "job", "hydra.callbacks.x._target_=torch.load"),
                                   ["override hydra.callbacks.x._target_=torch.load", "_target_"]),
    "override callback dict": (plain("--cfg", "job", "+hydra.callbacks.x={_target_: torch.load, weights_only: false}"),
                               ["hydra.callbacks.x._target_", "_target_"]),
    "override callbacks group": (with_dir("", "hydra/callbacks=evil", extra={"hydra/callbacks/evil": CALLBACK}),
                                 ["override hydra/callbacks=evil", "callbacks"]),
    "override group put at hydra.callbacks": (
        with_dir("", "+cb@hydra.callbacks=evil", extra={"cb/evil": "x: {_target_: os.makedirs, name: @MARKER@}"}),
        ["+cb@hydra.callbacks=evil", "hydra.callbacks"]),
    "override launcher group": (plain("-m", "hydra/launcher=joblib", "train.seed=1,2"),
                                ["hydra/launcher=joblib", "basic launcher"]),
    "override sweeper group": (plain("-m", "hydra/sweeper=optuna"), ["hydra/sweeper=optuna", "basic launcher"]),
    "override launcher target": (plain("--cfg", "job", "hydra.launcher._target_=os.system"),
                                 ["hydra.launcher._target_", "_target_"]),
    "override search path package": (plain("--cfg", "job", "hydra.searchpath=[pkg://antigravity]"),
                                     ["hydra.searchpath", "pkg://"]),
    "override env_set": (plain("--cfg", "job", "+hydra.job.env_set.CXX=/tmp/evil-cc"), ["hydra.job.env_set", "CXX"]),
    "override _target_ in a project section": (plain("+data.build_args._target_=os.system"),
                                               ["data.build_args._target_"]),
    "override _partial_ in a dict value": (plain("+train.inductor={_partial_: true}"), ["train.inductor._partial_"]),
    "override _args_ in a list value": (plain("evaluators=[{name: lsa, _args_: [1]}]"), ["evaluators._args_"]),
    "override logging handler class": (
        plain("--cfg", "job", "+hydra.job_logging.handlers.x={class: os.system}"),
        ["override +hydra.job_logging.handlers.x", "hydra.job_logging.handlers.x.class", "os.system"]),
    "override logging ext:// import": (
        plain("--cfg", "job", "+hydra.job_logging.handlers.x={class: logging.StreamHandler, stream: 'ext://antigravity.x'}"),
        ["hydra.job_logging.handlers.x.stream", "ext://antigravity.x"]),
    # flags
    "flag experimental rerun": (rerun_pickle("--experimental-rerun"), ["--experimental-rerun", "unpickles"]),
    "flag experimental rerun abbreviated": (rerun_pickle("--experimental-r"), ["--experimental-rerun"]),
    "flag config path package": (lambda t: ["--config-path", "pkg://antigravity", "--cfg", "job"], ["--config-path", "pkg://"]),
    "flag config dir missing": (lambda t: ["--config-dir", str(t / "nope"), "--cfg", "job"], ["--config-dir", "no such directory"]),
    "flag config name path in a config dir": (with_dir("", "--config-name", "../../etc/passwd"), ["--config-name", "not a path"]),
    "flag config name unknown in a config dir": (with_dir("", "--config-name", "cfg_nope"), ["cfg_nope", "evil"]),
    "flag check with a config dir file": (with_dir(CALLBACK, "--check"), ["confs/evil.yaml", "hydra.callbacks.x._target_"]),
    "flag config path file": (
        lambda t: ["--config-path", str(config_dir(t, alone=CALLBACK)), "--config-name", "alone", "--cfg", "job"],
        ["confs/alone.yaml", "hydra.callbacks.x._target_"]),
    # sweeps
    "sweep of 1e8 jobs": (plain("-m", "train.seed=range(0,100000000)"),
                          ["train.seed=range(0,100000000)", "100000000 jobs", "at most 1000"]),
    "sweep product over the bound": (plain("-m", "train.seed=range(0,100)", "optim.lr=range(1,101)"),
                                     ["10000 jobs", "at most 1000"]),
    "sweep shuffled 1e8": (plain("-m", "train.seed=shuffle(range(0,100000000))"), ["100000000 jobs"]),
    "sweep interval": (plain("-m", "optim.lr=interval(0,1)"), ["optim.lr=interval(0,1)", "basic sweeper"]),
    "sweep glob not a group": (plain("-m", "train.seed=glob(*)"), ["train.seed=glob(*)", "no jobs", "config group"]),
    "sweep range to infinity": (plain("-m", "train.seed=range(0,inf)"), ["train.seed=range(0,inf)", "finite"]),
    "sweep float range too fine": (plain("-m", "optim.lr=range(0,1e300,1e-300)"), ["optim.lr=range(0,1e300,1e-300)"]),
    "sweep range step 0": (plain("-m", "train.seed=range(0,10,0)"), ["train.seed=range(0,10,0)", "step 0"]),
    "sweep without -m": (plain("--cfg", "job", "train.seed=1,2"), ["train.seed=1,2", "add -m"]),
    "sweep job invalid": (plain("-m", "optim.lr=1e-3,-1"), ["-m job 1 (optim.lr=-1)", "optim.lr"]),
    # files in a --config-dir
    "file callback": (with_dir(CALLBACK), ["confs/evil.yaml", "hydra.callbacks.x._target_"]),
    "file logging factory": (with_dir(LOG_FACTORY), ["confs/evil.yaml", "hydra.job_logging.handlers.x.()"]),
    "file logging class": (with_dir("hydra:\n  hydra_logging:\n    handlers:\n      h: {class: os.system}\n"),
                           ["confs/evil.yaml", "hydra.hydra_logging.handlers.h.class", "os.system"]),
    "file logging interpolation": (
        with_dir("x: ext://antigravity.x\nhydra:\n  job_logging:\n    handlers:\n"
                 "      h: {class: logging.StreamHandler, stream: '${x}'}\n"),
        ["hydra.job_logging.handlers.h.stream", "interpolations"]),
    "file launcher": (with_dir("hydra:\n  launcher:\n    _target_: hydra_plugins.evil.Launcher\n"),
                      ["confs/evil.yaml", "hydra.launcher", "basic launcher"]),
    "file launcher group of its own": (
        lambda t: ["--config-dir", str(config_dir(t, mine="defaults:\n  - cfg_lsa_cpu\n  - override hydra/launcher: evil\n"
                                                         "  - _self_\n",
                                                  **{"hydra/launcher/evil": "_target_: os.makedirs\nname: @MARKER@\n"})),
                   "--config-name", "mine", "-m", "train.seed=1,2"],
        ["confs/hydra/launcher/evil.yaml", "hydra.launcher", "basic launcher"]),
    "file nested target in the sweeper": (with_dir("hydra:\n  sweeper:\n    x: {_target_: os.makedirs, name: @MARKER@}\n"),
                                          ["In 'evil'", "Key 'x' not in 'BasicSweeperConf'", "hydra.sweeper.x"]),
    "file search path": (with_dir("hydra:\n  searchpath: [pkg://antigravity]\n"),
                         ["confs/evil.yaml", "hydra.searchpath"]),
    "file env_set": (with_dir("hydra:\n  job:\n    env_set: {LD_PRELOAD: /tmp/evil.so}\n"),
                     ["confs/evil.yaml", "hydra.job.env_set", "LD_PRELOAD"]),
    "file _target_ in a project section": (with_dir("data:\n  build_args:\n    _target_: os.system\n"),
                                           ["confs/evil.yaml", "data.build_args._target_"]),
    "file project check": (with_dir("train:\n  lrr: 1\n"), ["config evil from", "confs", "train.lrr", "did you mean optim.lr"]),
    "file project check under --cfg": (with_dir("optim:\n  lr: -1\n", "--cfg", "job"), ["confs", "optim.lr"]),
    "file sweep hidden in the config": (
        with_dir("hydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n      train.seed: range(0,100000000)\n"),
        ["train.seed=range(0,100000000)", "100000000 jobs"]),
    "file sweep params with a target": (
        with_dir("hydra:\n  sweeper:\n    params:\n      +train.x: '{_target_: os.system}'\n", "-m"),
        ["hydra.sweeper.params", "_target_"]),
}


def tree(path):
    """Every path below `path` with its bytes (a directory: its digest), to show nothing changed."""
    return {p.relative_to(path): (dir_digest(p) if p.is_dir() else p.read_bytes()) for p in path.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_hydra_door_is_refused(tmp_path, monkeypatch, name):
    setup, culprits = CASES[name]
    argv = setup(tmp_path)
    before, repo_before = tree(tmp_path), sorted(p.name for p in REPO.iterdir())
    monkeypatch.chdir(tmp_path)
    result = run_in_process("pretrain.py", *argv)
    assert_one_line_error(result, *culprits)
    assert not (tmp_path / MARKER).exists()
    assert tree(tmp_path) == before  # nothing written: no multirun/, outputs/, runs/, .hydra/
    assert sorted(p.name for p in REPO.iterdir()) == repo_before


def test_the_table_covers_every_door():
    kinds = {name.split()[0] for name in CASES}
    assert len(CASES) >= 20 and kinds == {"override", "flag", "sweep", "file"}


def test_a_clean_config_dir_passes_the_same_checks(tmp_path, monkeypatch):
    """A good config in a --config-dir, a glob sweep over a config group, and Hydra's own
    logging configs pass the pre-check (cli returns None: Hydra takes over)."""
    import pretrain

    root = config_dir(tmp_path, mine=on_cpu_preset("train:\n  max_steps: 3\n"))
    monkeypatch.chdir(tmp_path)
    assert pretrain.cli(["--config-dir", str(root), "--config-name", "mine", "--cfg", "job"]) is None
    assert pretrain.cli(["--config-name", "cfg_lsa_cpu", "-m", "arch=glob(trm*)"]) is None
    assert pretrain.cli(["--config-name", "cfg_lsa_cpu", "--cfg", "job", "hydra/job_logging=default",
                         "hydra/hydra_logging=default"]) is None
    assert not any(p.name != "confs" for p in tmp_path.iterdir())


def test_sweeps_are_counted_without_being_listed():
    """range(0, 10**12) is counted by arithmetic (listing it would not end); the bound is exact."""
    from training.hydra_guard import MAX_SWEEP_JOBS, parse_overrides, plan_sweep
    from training.config import ConfigError

    total, columns = plan_sweep(parse_overrides([f"train.seed=range(0,{MAX_SWEEP_JOBS})", "optim.lr=1e-3"]))
    assert total == MAX_SWEEP_JOBS and len(columns[0]) == MAX_SWEEP_JOBS and columns[1] == ["optim.lr=1e-3"]
    assert plan_sweep(parse_overrides(["optim.lr=range(0,1,0.25)", "train.seed=1,2"]))[0] == 8
    assert plan_sweep(parse_overrides(["train.seed=1,2", "train.seed=3,4,5"]))[0] == 3  # the last one per key, as Hydra
    for overrides in ([f"train.seed=range(0,{MAX_SWEEP_JOBS + 1})"], ["train.seed=range(0,1000000000000)"]):
        with pytest.raises(ConfigError, match="at most"):
            plan_sweep(parse_overrides(overrides))


# The command-line contract, in a subprocess: Hydra's own main() would run the payload.
SUBPROCESS = {
    "callback in a --config-dir file": (with_dir(CALLBACK, "train.max_steps=1"), ["hydra.callbacks.x._target_"]),
    "logging factory under --hydra-help": (with_dir(LOG_FACTORY, "--hydra-help"), ["hydra.job_logging.handlers.x.()"]),
    "experimental rerun": (rerun_pickle("--experimental-rerun"), ["--experimental-rerun"]),
    "sweep of 1e8 jobs": (plain("-m", "train.seed=range(0,100000000)"), ["100000000 jobs"]),
}


@pytest.mark.parametrize("name", list(SUBPROCESS))
@pytest.mark.slow
def test_hydra_door_is_refused_on_the_command_line(tmp_path, name):
    setup, culprits = SUBPROCESS[name]
    argv = setup(tmp_path)
    before = tree(tmp_path)
    result = run_module(str(REPO / "pretrain.py"), *argv, cwd=tmp_path, timeout=120)
    assert_one_line_error(result, *culprits)
    assert not (tmp_path / MARKER).exists() and tree(tmp_path) == before


def test_shell_completion_checks_the_line_it_completes(tmp_path, monkeypatch):
    """A completion query composes COMP_LINE's words: a search path there would import a package."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMP_LINE", "python pretrain.py hydra.searchpath=[pkg://antigravity] train.")
    result = run_in_process("pretrain.py", "-sc", "query=bash")
    assert_one_line_error(result, "COMP_LINE", "hydra.searchpath")
    assert not any(tmp_path.iterdir())
