"""Shared fixtures. The default suite is CPU-only; GPU tests are marked `gpu` and skipped
where CUDA is absent."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("WANDB_MODE", "disabled")
# One thread: the tiny test models gain nothing from more, and OpenMP threads that spin while
# other processes hold the cores slow a run down many times over.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


class UserInterruptGuard:
    """Ctrl-C (or SIGTERM/SIGHUP) sent to pytest stops the suite, even while a test runs training
    in this process, whose handlers would take it as a pre-emption (checkpoint and return, the
    test failing and the suite going on). Every SIGINT/SIGTERM/SIGHUP handler installed during the
    session is wrapped: a signal the tests sent themselves (os.kill or os.killpg reaching this
    process, signal.pthread_kill, signal.raise_signal: counted when sent) goes to the handler; any
    other came from outside and raises KeyboardInterrupt, pytest's own interruption (exit code 2).
    signal.signal and signal.getsignal still hand back the handlers as installed."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.expected: collections.Counter = collections.Counter()
        self.real = {"signal": signal.signal, "getsignal": signal.getsignal, "raise_signal": signal.raise_signal,
                     "pthread_kill": signal.pthread_kill, "kill": os.kill, "killpg": os.killpg}

    def expect(self, sig) -> None:
        if sig in self.SIGNALS:
            self.expected[int(sig)] += 1

    def kill(self, pid, sig):
        if pid in (os.getpid(), 0) or pid == -os.getpgrp():
            self.expect(sig)
        return self.real["kill"](pid, sig)

    def killpg(self, pgid, sig):
        if pgid in (0, os.getpgrp()):
            self.expect(sig)
        return self.real["killpg"](pgid, sig)

    def pthread_kill(self, ident, sig):
        self.expect(sig)
        return self.real["pthread_kill"](ident, sig)

    def raise_signal(self, sig):
        self.expect(sig)
        return self.real["raise_signal"](sig)

    def wrap(self, handler):
        if not callable(handler) or hasattr(handler, "guarded_handler"):
            return handler

        def guarded(signum, frame):
            if self.expected[signum] > 0:
                self.expected[signum] -= 1
                return handler(signum, frame)
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} from outside the tests: stopping the suite")

        guarded.guarded_handler = handler
        return guarded

    @staticmethod
    def unwrap(handler):
        return getattr(handler, "guarded_handler", handler)

    def signal(self, sig, handler):
        return self.unwrap(self.real["signal"](sig, self.wrap(handler) if sig in self.SIGNALS else handler))

    def getsignal(self, sig):
        return self.unwrap(self.real["getsignal"](sig))

    def install(self) -> None:
        for module, name in ((signal, "signal"), (signal, "getsignal"), (signal, "raise_signal"),
                             (signal, "pthread_kill"), (os, "kill"), (os, "killpg")):
            setattr(module, name, getattr(self, name))

    def uninstall(self) -> None:
        for module, name in ((signal, "signal"), (signal, "getsignal"), (signal, "raise_signal"),
                             (signal, "pthread_kill"), (os, "kill"), (os, "killpg")):
            setattr(module, name, self.real[name])


INTERRUPT_GUARD = UserInterruptGuard()


def pytest_configure(config):
    INTERRUPT_GUARD.install()


def pytest_unconfigure(config):
    INTERRUPT_GUARD.uninstall()


def pytest_runtest_setup(item):
    INTERRUPT_GUARD.expected.clear()  # a self-sent signal no handler took does not excuse a later one


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def run_module(*args: str, cwd: Path = REPO, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python <args>` in a subprocess (from the repo root unless `cwd`), capturing output;
    `env` adds variables. Scripts and modules are found under the repo from any `cwd`."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "disabled", **(env or {})}
    if args and args[0].endswith(".py") and not os.path.isabs(args[0]):
        args = (str(REPO / args[0]), *args[1:])
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


_SCRIPTS: dict[str, object] = {}


def run_in_process(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run a command line of this project in this process (about 10x faster than a subprocess,
    which mostly pays for importing torch): `pretrain.py ...`, `-m dataset.build_x ...` or
    `scripts/x.py ...`, through the same entry functions `__main__` calls; `stdin` is the text
    it reads from standard input. Returns what `run_module` would: the exit code and the
    captured stdout/stderr."""
    import importlib
    import importlib.util
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from core.cli import run_cli

    out, err = io.StringIO(), io.StringIO()
    code = 0
    real_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()), encoding="utf-8")
    with redirect_stdout(out), redirect_stderr(err):
        try:
            if args[0] == "pretrain.py":
                import pretrain

                code = pretrain.cli(list(args[1:]))
                assert code is not None, "run Hydra's own flags in a subprocess"
            else:
                if args[0] == "-m":
                    module, argv = importlib.import_module(args[1]), list(args[2:])
                else:
                    if args[0] not in _SCRIPTS:
                        spec = importlib.util.spec_from_file_location(Path(args[0]).stem + "_script", REPO / args[0])
                        _SCRIPTS[args[0]] = importlib.util.module_from_spec(spec)
                        sys.modules[spec.name] = _SCRIPTS[args[0]]  # pydantic resolves annotations through it
                        spec.loader.exec_module(_SCRIPTS[args[0]])
                    module, argv = _SCRIPTS[args[0]], list(args[1:])
                # argdantic scripts and builders: `cli(argv)`; the others: `main(argv)`, under run_cli as in __main__
                entry = module.cli if hasattr(module, "cli") else module.main
                run_cli(lambda: entry(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdin = real_stdin
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def assert_one_line_error(result: subprocess.CompletedProcess, *culprits: str) -> None:
    """Bad input's contract: exit code 2 and one stderr line, `error: ...`, naming each culprit."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-2000:]
    for culprit in culprits:
        assert culprit in lines[0], (culprit, lines[0])


@contextlib.contextmanager
def sigterm_after_step(monkeypatch, step: int):
    """Inside the block, training sends itself SIGTERM right after optimizer step `step`."""
    import signal

    import training.loop as loop

    original = loop.train_step

    def step_then_signal(state):
        out = original(state)
        if state.step == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    try:
        yield
    finally:
        monkeypatch.setattr(loop, "train_step", original)


def dir_digest(path: Path) -> str:
    """SHA-256 over every file's relative path and bytes below `path`."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(path).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def build_lsa(out: Path, **overrides) -> Path:
    from dataset.build_lsa_dataset import LSABuildConfig, build_lsa_dataset

    args = dict(output_dir=out, n=4, max_cost=9, num_train=40, num_test=10, num_aug=3, seed=0, progress=False)
    args.update(overrides)
    return build_lsa_dataset(LSABuildConfig(**args))


TINY_OVERRIDES = [
    "data.build_args={n: 4, max_cost: 9, num_train: 300, num_test: 100, num_aug: 4, seed: 0}",
    "arch.hidden_size=32", "arch.num_heads=2", "arch.H_cycles=1", "arch.L_cycles=2", "arch.halt_max_steps=2",
    "optim.lr=3e-3", "optim.lr_warmup_steps=20", "optim.puzzle_emb_lr=3e-3",
    "train.global_batch_size=64", "train.ema_rate=0.95", "logging.wandb_mode=disabled", "logging.progress=false",
]


def tiny_config(tmp_path: Path, *extra: str, data: Path | None = None, name: str = "cfg_lsa_cpu"):
    """The real cfg_lsa_cpu, shrunk to a seconds-long CPU run, with `extra` Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from training.config import validate_config

    overrides = [f"data.path={data or tmp_path / 'data'}", f"logging.runs_dir={tmp_path / 'runs'}", *TINY_OVERRIDES, *extra]
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        return validate_config(OmegaConf.to_container(compose(name, overrides=overrides), resolve=True))


# The CPU preset's project, and overrides that shrink it to a model of seconds (the command-line form).
CPU_PROJECT = "trm-lsa-cpu"
TINY_CLI = ["arch.hidden_size=32", "arch.num_heads=2", "arch.H_cycles=1", "arch.L_cycles=2", "arch.halt_max_steps=2",
            "train.global_batch_size=32", "logging.progress=false"]


def pretrain_argv(data: Path, runs: Path, *extra: str) -> list[str]:
    """A tiny cfg_lsa_cpu command line for run_in_process / run_module."""
    return ["pretrain.py", "--config-name", "cfg_lsa_cpu", f"data.path={data}", f"logging.runs_dir={runs}", *TINY_CLI,
            *extra]


def lsa_world(root: Path, max_steps: int = 6, eval_interval: int = 3) -> dict[str, Path]:
    """A 4x4 LSA dataset and a finished tiny run `base` with checkpoints, under `root`."""
    data = build_lsa(root / "lsa4", num_train=60, num_test=20, num_aug=2)
    from training.loop import train

    train(tiny_config(root, f"train.max_steps={max_steps}", f"train.eval_interval={eval_interval}",
                      "logging.run_name=base", "train.global_batch_size=32", data=data))
    return {"root": root, "data": data, "run": root / "runs" / CPU_PROJECT / "base"}


def lsa_world_with_export(root: Path) -> dict[str, Path]:
    """`lsa_world` plus an export of its run at `root/export`."""
    from training.inference import export_model

    world = lsa_world(root)
    export_model(world["run"], root / "export")
    return {**world, "export": root / "export"}


@pytest.fixture(scope="session")
def lsa_small(tmp_path_factory) -> Path:
    """A small 4x4 LSA dataset (40 x 4 train, 10 test), built once per session."""
    return build_lsa(tmp_path_factory.mktemp("data") / "lsa4")


def task_config(name: str, tmp_path: Path, *extra: str):
    """A shipped config (any task) shrunk to a seconds-long CPU run, with `extra` overrides."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from training.config import validate_config

    overrides = [f"data.path={tmp_path / name}", f"logging.runs_dir={tmp_path / 'runs'}", "arch.hidden_size=32",
                 "arch.num_heads=2", "train.global_batch_size=16", "logging.wandb_mode=disabled",
                 "logging.progress=false", *extra]
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        return validate_config(OmegaConf.to_container(compose(name, overrides=overrides), resolve=True))


@pytest.fixture(scope="session")
def runs_zoo(tmp_path_factory) -> dict[str, Path]:
    """Finished tiny runs for the run tools (list, compare, plot, solve, export), built once:
    two LSA runs that differ in width and LR, and a Sudoku and an arithmetic run.
    Returns {"runs_dir", "alpha", "beta", "sudoku", "arith"} (run directories)."""
    from training.loop import train

    tmp = tmp_path_factory.mktemp("zoo")
    data = build_lsa(tmp / "lsa4", num_train=60, num_test=20)
    runs = {"runs_dir": tmp / "runs"}
    for name, extra in (("alpha", ["arch.hidden_size=32"]), ("beta", ["arch.hidden_size=48", "optim.lr=1e-3"])):
        result = train(tiny_config(tmp, "train.max_steps=40", "train.eval_interval=20", "train.log_every=10",
                                   f"logging.run_name={name}", *extra, data=data))
        runs[name] = Path(result["run_dir"])
    sudoku = task_config("cfg_sudoku_cpu", tmp, "+data.build_args.workers=1", "data.build_args.num_train=20",
                         "data.build_args.num_test=8", "data.build_args.num_aug=1", "train.max_steps=4",
                         "train.eval_interval=4", "logging.run_name=sud")
    runs["sudoku"] = Path(train(sudoku)["run_dir"])
    arith = task_config("cfg_arith_cpu", tmp, "data.build_args.num_train=200", "data.build_args.num_test=20",
                        "train.max_steps=4", "train.eval_interval=4", "logging.run_name=ari")
    runs["arith"] = Path(train(arith)["run_dir"])
    return runs


def load_script(name: str):
    """scripts/<name>.py as a module, to call its functions in-process (faster than a subprocess;
    each script keeps one subprocess test for its command-line contract)."""
    import importlib.util

    module_name = f"script_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves argument models' annotations through it
    spec.loader.exec_module(module)
    return module
