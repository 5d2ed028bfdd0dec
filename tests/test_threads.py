"""Issue 23, item 1: torch's CPU threads, `train.num_threads: auto | N | null`, chosen in one
place (training/engine/threads.py) and applied by training and by every script that runs a model."""

import json

import pytest
import torch

from conftest import run_in_process
from training.config import ConfigError, validate_config
from training.engine.threads import apply_threads, auto_threads


@pytest.fixture
def restore_threads(monkeypatch):
    saved = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(saved)


def test_auto_follows_omp_num_threads_when_set(restore_threads):
    restore_threads.setenv("OMP_NUM_THREADS", "3")
    assert auto_threads(default=8, load=0.0, cores=8) == 3
    restore_threads.setenv("OMP_NUM_THREADS", "junk")  # not a count: as if unset
    assert auto_threads(default=8, load=0.0, cores=8) == 8


@pytest.mark.parametrize("default, load, cores, expected", [
    (2, 0.1, 2, 2),     # an idle 2-core machine: torch's default (faster there than one thread)
    (2, 0.8, 2, 1),     # one core taken: one thread
    (2, 5.3, 2, 1),     # a busy machine: one thread, never fewer
    (16, 3.0, 32, 16),  # plenty free: never more than torch's default
    (16, 28.4, 32, 4),  # the cores the load leaves free
])
def test_auto_takes_the_cores_the_load_leaves_free(restore_threads, default, load, cores, expected):
    restore_threads.delenv("OMP_NUM_THREADS", raising=False)
    assert auto_threads(default=default, load=load, cores=cores) == expected


def test_apply_sets_torch_threads(restore_threads):
    assert apply_threads(2) == 2 and torch.get_num_threads() == 2
    restore_threads.setenv("OMP_NUM_THREADS", "1")
    assert apply_threads("auto") == 1 and torch.get_num_threads() == 1
    assert apply_threads(None) is None and torch.get_num_threads() == 1  # null: left as it is


def test_the_setting_is_typed(tmp_path):
    from conftest import tiny_config

    raw = tiny_config(tmp_path).to_dict()
    assert validate_config(raw).train.num_threads == "auto"  # the default
    for value in (4, None):
        raw["train"]["num_threads"] = value
        assert validate_config(raw).train.num_threads == value
    for bad in ("many", 0, 5000, 1.5):
        raw["train"]["num_threads"] = bad
        with pytest.raises(ConfigError, match="train.num_threads"):
            validate_config(raw)


def test_evaluate_applies_the_runs_thread_count(runs_zoo, restore_threads, tmp_path):
    """evaluate.py takes the run's train.num_threads (here a copy of a finished run set to 2)."""
    import shutil

    from training.engine.checkpoint import resolve_checkpoint

    run = tmp_path / "runs" / "p" / "two-threads"
    shutil.copytree(runs_zoo["alpha"], run)
    ckpt = resolve_checkpoint(run)
    config = json.loads((ckpt / "config.json").read_text())
    config["train"]["num_threads"] = 2
    (ckpt / "config.json").write_text(json.dumps(config))
    torch.set_num_threads(1)
    out = run_in_process("scripts/evaluate.py", "--checkpoint", str(run), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert torch.get_num_threads() == 2


@pytest.mark.slow  # two threads on a busy machine: seconds
def test_a_cpu_run_says_how_many_threads(tmp_path, capsys, restore_threads):
    from conftest import build_lsa, tiny_config
    from training.loop import train

    restore_threads.setenv("OMP_NUM_THREADS", "2")  # auto takes it
    train(tiny_config(tmp_path, "train.max_steps=2", "train.eval_interval=2", data=build_lsa(tmp_path / "data")))
    assert torch.get_num_threads() == 2
    assert "params on cpu (2 threads)," in capsys.readouterr().out
