"""Property-based hostile input: mutate one field of dataset.json, meta.json or state.pt (any
field, any hostile value, or delete it) and run the command that reads it. It must end with a
normal run or one clean `error:` line and exit code 2, never a traceback, and within a bounded
time. Examples are derandomized, so CI sees the same ones every time."""

import copy
import json
import math
import shutil
import signal
from contextlib import contextmanager

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CPU_PROJECT, lsa_world, pretrain_argv, run_in_process

pytestmark = pytest.mark.slow  # not in the fast subset (pytest -m "not slow")

PROJECT = CPU_PROJECT
pretrain = pretrain_argv
SECONDS_PER_EXAMPLE = 60
DELETE = object()

HOSTILE_VALUES = [None, True, -1, 0, 1, 7, 2**31, 2**63 - 1, -(2**63), 3.5, -0.0, 1e308, math.inf, -math.inf, math.nan,
                  "", "x", "../../x", "all", "9" * 400, [], [0], ["all", "all"], {}, {"a": 1}, DELETE]
HOSTILE_TENSORS = [torch.zeros(0), torch.zeros(3), torch.full((2, 2), math.nan), torch.tensor(-5), torch.zeros(1, dtype=torch.uint8)]
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return lsa_world(tmp_path_factory.mktemp("props"), max_steps=4, eval_interval=4)


def paths_of(value, prefix=()):
    """Every path to a field of nested dicts/lists/tuples (not into tensors)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths_of(item, prefix + (key,))
    elif isinstance(value, (list, tuple)) and len(value) <= 8:
        for i, item in enumerate(value):
            out += paths_of(item, prefix + (i,))
    return out


def mutated(value, path, new):
    """A copy of `value` with the field at `path` replaced by `new` (or deleted)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        out = dict(value)
        if not rest and new is DELETE:
            out.pop(head)
        else:
            out[head] = mutated(value[head], rest, new)
        return out
    items = list(value)
    if not rest and new is DELETE:
        del items[head]
    else:
        items[head] = mutated(items[head], rest, new)
    return type(value)(items) if isinstance(value, tuple) else items


@contextmanager
def time_limit(seconds):
    def expire(signum, frame):
        raise TimeoutError(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_clean(result):
    lines = result.stderr.strip().splitlines()
    if result.returncode == 0:
        return
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-3000:]


def pick(data, draw_path, draw_value):
    paths = paths_of(data)
    path = paths[draw_path % len(paths)]
    return path, mutated(data, path, draw_value)


@SETTINGS
@given(split=st.sampled_from(["train", "test"]), which=st.integers(0, 10**6), value=st.sampled_from(HOSTILE_VALUES))
def test_mutated_dataset_json(world, tmp_path_factory, split, which, value):
    tmp = tmp_path_factory.mktemp("ds")
    data = tmp / "data"
    shutil.copytree(world["data"], data)
    path = data / split / "dataset.json"
    field, new = pick(json.loads(path.read_text()), which, value)
    path.write_text(json.dumps(new))
    with time_limit(SECONDS_PER_EXAMPLE):
        result = run_in_process(*pretrain(data, tmp / "runs", "logging.run_name=r", "train.max_steps=2",
                                          "train.eval_interval=2"))
    assert_clean(result)


@SETTINGS
@given(which=st.integers(0, 10**6), value=st.sampled_from(HOSTILE_VALUES))
def test_mutated_meta_json(world, tmp_path_factory, which, value):
    tmp = tmp_path_factory.mktemp("meta")
    run = tmp / "runs" / PROJECT / "base"
    shutil.copytree(world["run"], run)
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text()
    field, new = pick(json.loads((ckpt / "meta.json").read_text()), which, value)
    (ckpt / "meta.json").write_text(json.dumps(new))
    with time_limit(SECONDS_PER_EXAMPLE):
        assert_clean(run_in_process("scripts/evaluate.py", "--checkpoint", str(run), "--no-progress"))
        assert_clean(run_in_process(*pretrain(world["data"], tmp / "runs", "logging.run_name=base", "train.resume=true",
                                              "train.max_steps=6")))


@SETTINGS
@given(which=st.integers(0, 10**6), value=st.sampled_from(HOSTILE_VALUES + HOSTILE_TENSORS))
def test_mutated_state_pt(world, tmp_path_factory, which, value):
    tmp = tmp_path_factory.mktemp("state")
    run = tmp / "runs" / PROJECT / "base"
    shutil.copytree(world["run"], run)
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text()
    state = torch.load(ckpt / "state.pt", weights_only=True)
    field, new = pick(state, which, copy.deepcopy(value))
    torch.save(new, ckpt / "state.pt")
    with time_limit(SECONDS_PER_EXAMPLE):
        result = run_in_process(*pretrain(world["data"], tmp / "runs", "logging.run_name=base", "train.resume=true",
                                          "train.max_steps=6"))
    assert_clean(result)
