"""Second review of checkpoints: pruning keeps evaluated weights, saves between evaluations
claim no scores, `best` after a rewind or fork, a kill just before a save's rename, and the
helpers that replaced duplicated code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import CPU_PROJECT, REPO, tiny_config
from training.engine.checkpoint import (
    CheckpointManager, list_checkpoints, resolve_checkpoint, save_checkpoint, set_aside_after,
)

PAYLOAD = {name: {"w": torch.ones(1)} for name in ("model", "ema", "optim", "state")}


# ---------------------------------------------------------------------------------------------
# 5: the checkpoint cadence must not evict the evaluated checkpoint, nor copy its scores


def test_cadence_saves_do_not_prune_the_newest_evaluated_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 4000, PAYLOAD, {}, {"metrics": {"eval/accuracy": 0.4}}, keep=2)
    save_checkpoint(tmp_path, 5000, PAYLOAD, {}, {"metrics": {"eval/accuracy": 0.5}}, keep=2)
    for step in (6000, 7000, 8000):  # cfg_sudoku's checkpoint_every=1000 between evaluations
        save_checkpoint(tmp_path, step, PAYLOAD, {}, {"metrics": {}, "last_eval_step": 5000}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0005000", "step_0007000", "step_0008000"]
    save_checkpoint(tmp_path, 9000, PAYLOAD, {}, {"metrics": {"eval/accuracy": 0.6}}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0008000", "step_0009000"]


def test_saves_between_evaluations_record_no_metrics(lsa_small, tmp_path):
    from training.loop import train

    train(tiny_config(tmp_path, "train.max_steps=8", "train.eval_interval=4", "train.checkpoint_every=3",
                      "train.keep_checkpoints=10", "logging.run_name=cad", data=lsa_small))
    root = tmp_path / "runs" / CPU_PROJECT / "cad" / "checkpoints"
    meta = {p.name: json.loads((p / "meta.json").read_text()) for p in list_checkpoints(root.parent)}
    assert sorted(meta) == ["step_0000003", "step_0000004", "step_0000006", "step_0000008"]
    assert meta["step_0000003"]["metrics"] == {} and "last_eval_step" not in meta["step_0000003"]
    assert meta["step_0000006"]["metrics"] == {} and meta["step_0000006"]["last_eval_step"] == 4
    assert "eval/accuracy" in meta["step_0000004"]["metrics"] and "eval/accuracy" in meta["step_0000008"]["metrics"]


# ---------------------------------------------------------------------------------------------
# 6: a rewind or fork gets a `best` pointer again


class FakeState:
    """What CheckpointManager.save needs of a TrainState."""

    def __init__(self, step: int, best_value: float | None):
        self.step, self.best_value = step, best_value

    def state_dict(self) -> dict:
        return {**PAYLOAD, "state": {"step": self.step, "best_value": self.best_value}}


def manager(run_dir: Path, keep: int = 10) -> CheckpointManager:
    cfg = SimpleNamespace(save_checkpoints=True, best_metric="eval/x", best_mode="max", keep_checkpoints=keep,
                          checkpoint_every=0, checkpoint_every_minutes=0, eval_interval=1)
    return CheckpointManager(run_dir, cfg, {}, {})


def best_of(run_dir: Path) -> str | None:
    pointer = run_dir / "checkpoints" / "best"
    return pointer.read_text().strip() if pointer.is_file() else None


def test_a_rewind_points_best_at_the_kept_checkpoint_that_holds_the_best_value(tmp_path):
    saver, state = manager(tmp_path), FakeState(0, None)
    for step, value in ((1, 0.5), (2, 0.9), (3, 0.7)):
        state.step = step
        saver.save(state, {"eval/x": value})
    assert best_of(tmp_path) == "step_0000002"
    set_aside_after(tmp_path, tmp_path / "checkpoints" / "step_0000001")  # `best` goes aside with step 2
    assert best_of(tmp_path) is None
    resumed = FakeState(1, 0.5)  # as restored from step_0000001
    resumed.step = 2
    manager(tmp_path).save(resumed, {"eval/x": 0.4})  # not better than 0.5: step 1 stays the best
    assert best_of(tmp_path) == "step_0000001" and resumed.best_value == 0.5


def test_a_rewind_whose_best_checkpoint_was_pruned_lets_the_next_evaluation_be_best(tmp_path):
    saver, state = manager(tmp_path, keep=2), FakeState(1, None)
    saver.save(state, {"eval/x": 0.9})
    state.step = 2
    saver.save(state, {})  # a cadence save, carrying best_value 0.9
    state.step = 3
    saver.save(state, {"eval/x": 0.95})  # step 1 is pruned now
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_0000002", "step_0000003"]
    set_aside_after(tmp_path, tmp_path / "checkpoints" / "step_0000002")
    resumed = FakeState(3, 0.9)  # restored from step 2, whose best value no kept checkpoint holds
    manager(tmp_path, keep=2).save(resumed, {"eval/x": 0.8})
    assert best_of(tmp_path) == "step_0000003" and resumed.best_value == 0.8


def test_a_fork_starts_its_own_best(tmp_path):
    fork, state = tmp_path / "fork", FakeState(4, 0.9)  # restored from another run's checkpoint
    manager(fork).save(state, {"eval/x": 0.3})
    assert best_of(fork) == "step_0000004" and state.best_value == 0.3


# ---------------------------------------------------------------------------------------------
# 10: a kill just before a save's rename leaves nothing behind for good

KILLED_BEFORE_RENAME = """
import os, sys, threading, torch
sys.path.insert(0, {repo!r})
import training.engine.checkpoint as checkpoint
replace = os.replace

def wait_at_rename(src, dst):
    if os.path.basename(str(src)).startswith(".tmp-step_"):
        print("renaming", flush=True)
        threading.Event().wait()  # here until SIGKILL
    return replace(src, dst)

checkpoint.os.replace = wait_at_rename
checkpoint.save_checkpoint(sys.argv[1], 1, {{"model": {{"w": torch.ones(4)}}, "state": {{"step": 1}}}}, {{}}, {{}}, keep=2)
"""


@pytest.mark.slow
def test_a_save_killed_at_its_rename_leaves_no_temporary_folder_for_good(tmp_path):
    script = tmp_path / "saver.py"
    script.write_text(KILLED_BEFORE_RENAME.format(repo=str(REPO)))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "renaming"  # wait for the event, not for time
    finally:
        proc.kill()
        proc.wait()
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp-step_")]  # the kill left it
    save_checkpoint(tmp_path / "run", 2, PAYLOAD, {}, {}, keep=2)
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]
    assert not (root / "step_0000002" / ".tinyrecursion-partial-save").exists()


# ---------------------------------------------------------------------------------------------
# 13: shared helpers instead of copies


def test_a_picture_is_written_through_the_shared_helpers(tmp_path, monkeypatch):
    import evaluators.render as render
    import training.files as files
    from core.errors import InputError

    assert files._umask is __import__("dataset.common", fromlist=["_umask"])._umask
    fig = render.new_figure(1, 1)
    calls = []
    monkeypatch.setattr(render, "replace_file", lambda path, content: (calls.append(path),
                                                                       files.replace_file(path, content))[1])
    out = tmp_path / "a.png"
    render.save(fig, out)
    assert out.read_bytes().startswith(b"\x89PNG") and calls == []  # new file: linked, not replaced
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~files._umask())
    with pytest.raises(InputError, match="exists"):
        render.save(fig, out)
    out.write_bytes(b"old")
    render.save(fig, out, overwrite=True)
    assert out.read_bytes().startswith(b"\x89PNG") and calls == [out]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_the_umask_is_read_without_being_changed(monkeypatch, umask):
    """Reading the umask must not set it, even for an instant (another thread's new file would get
    the stand-in): on Linux it comes from /proc/self/status; os.umask is not called."""
    from dataset.common import _umask

    previous = os.umask(umask)
    try:
        if not Path("/proc/self/status").exists():
            pytest.skip("no /proc: the stand-in path (0o077 under a lock) is used")
        monkeypatch.setattr(os, "umask", lambda mask: pytest.fail(f"os.umask({oct(mask)}) called"))
        assert _umask() == umask
    finally:
        monkeypatch.undo()
        os.umask(previous)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_checkpoint_folder_is_as_private_as_the_umask_makes_it(tmp_path, umask):
    """A checkpoint folder follows the umask as the run's other files do (the .pt files, config.json,
    metrics.jsonl): mkdtemp made it 0700, so in a shared runs directory nobody else could evaluate,
    export or list it (list_runs.py showed '(unreadable)')."""
    previous = os.umask(umask)
    try:
        ckpt = save_checkpoint(tmp_path, 10, PAYLOAD, {}, {"metrics": {}}, keep=2)
    finally:
        os.umask(previous)
    assert oct(ckpt.stat().st_mode & 0o777) == oct(0o777 & ~umask)
    assert oct((ckpt / "model.pt").stat().st_mode & 0o777) == oct(0o666 & ~umask)


class PickledCall:
    """Unpickling this calls os.system (what a planted checkpoint would do)."""

    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("damage, named", [
    ((b"_rebuild_tensor_v2", b"_rebuold_tensor_v2"), "torch._utils._rebuold_tensor_v2"),
    ((b"FloatStorage", b"FloatSto#age"), "torch.FloatSto#age"),
    ((b"_rebuild_tensor_v2", b"_rebuild_ten\x1eor_v2"), r"torch._utils._rebuild_ten\x1eor_v2"),
])
def test_a_checkpoint_whose_pickle_is_damaged_in_a_name_is_corrupt_not_code(tmp_path, damage, named):
    """A few bytes gone wrong in a real checkpoint land mostly in the names its pickle holds (the
    functions that rebuild tensors): torch then refuses an unknown 'global', which is no reason to
    call the file 'possible code'. A name that does not exist in a module already loaded is damage,
    and the message names it, as it names a refused one."""
    from training.engine.checkpoint import CheckpointError, load_file

    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(3)}, path)
    data = path.read_bytes()
    assert data.count(damage[0]) >= 1
    path.write_bytes(data.replace(damage[0], damage[1], 1))
    with pytest.raises(CheckpointError) as caught:
        load_file(path)
    message = str(caught.value)
    assert "possible code" not in message and "corrupt: it names " + named in message, message
    assert len(message.splitlines()) == 1


def test_a_checkpoint_that_pickles_a_call_is_refused_naming_it(tmp_path):
    from training.engine.checkpoint import CheckpointError, load_file

    path = tmp_path / "state.pt"
    torch.save({"step": 3, "payload": PickledCall()}, path)
    with pytest.raises(CheckpointError) as caught:
        load_file(path)
    message = str(caught.value)
    assert ("refused: it contains pickled objects other than tensors and plain data (possible code: "
            f"{os.system.__module__}.system)") in message, message


def test_a_damaged_checkpoint_says_what_torch_found_not_its_general_advice(tmp_path):
    """Torch's weights-only refusals begin with the same general advice (re-run with
    weights_only=False); the reason is after 'WeightsUnpickler error:'. A damaged pickle is named
    by that reason, never by the advice."""
    from training.engine.checkpoint import CheckpointError, load_file

    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(3)}, path)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"storage", b"storagx", 1))  # one byte: the tensor's data is no storage now
    with pytest.raises(CheckpointError) as caught:
        load_file(path)
    message = str(caught.value)
    assert "corrupt: Only persistent_load of storage is allowed" in message, message
    assert "weights_only" not in message and "\x1b" not in message and len(message.splitlines()) == 1


@pytest.mark.parametrize("protocol", [4, 5])
def test_a_legacy_torch_file_of_pickle_protocol_4_or_5_is_named_so_not_another_kind_of_file(tmp_path, protocol):
    """torch.save's legacy format (_use_new_zipfile_serialization=False) with pickle_protocol 4 or
    5 opens with a pickle frame before the magic number: it was called 'neither the zip archive
    torch.save writes nor its legacy format'. Torch's weights-only loader cannot read it (it
    refuses the frame), so the message says what the file is and how to make it loadable."""
    from training.engine.checkpoint import CheckpointError, load_file

    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    with pytest.raises(CheckpointError) as caught:
        load_file(path)
    message = str(caught.value)
    assert message == (f"{path}: cannot load (a legacy-format torch file (pickle protocol {protocol}), which this "
                       "loader cannot read weights-only; re-save it with a current torch (torch.save's default "
                       "format and protocol))"), message
    resaved = tmp_path / "resaved.pt"  # what the message asks for: loaded where trusted, saved by default
    torch.save(torch.load(path, weights_only=False), resaved)
    assert torch.equal(load_file(resaved)["w"], torch.ones(3))


def save_torchscript(path):
    """A scripted module saved by torch.jit.save (both deprecated in recent torch, and warning so)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), path)


def test_a_torchscript_archive_where_a_checkpoint_file_belongs_is_named_so_not_corrupt(tmp_path):
    """torch.jit.save writes a zip archive too; torch.load refuses it weights-only, and the
    refusal was reported as 'corrupt'. It is a TorchScript archive (a whole scripted module, not
    the tensors a training checkpoint holds), and the message says so."""
    from training.engine.checkpoint import CheckpointError, load_file

    path = tmp_path / "model.pt"
    save_torchscript(path)
    with pytest.raises(CheckpointError) as caught:
        load_file(path)
    message = str(caught.value)
    assert message == (f"{path}: cannot load (a TorchScript archive (what torch.jit.save writes), not a training "
                       "checkpoint file)"), message


ONLY_DIRECTORIES = ("not a checkpoint directory; a checkpoint is a directory (model.pt, config.json, meta.json: "
                    "what training saves), and so is a run")


@pytest.mark.parametrize("make, kind", [
    (save_torchscript, "a TorchScript archive (what torch.jit.save writes)"),
    (lambda p: torch.save({"w": torch.ones(3)}, p), "a torch file (what torch.save writes)"),
    (lambda p: p.write_text("notes"), "a file"),
], ids=["TorchScript", "torch.save", "text"])
def test_evaluate_given_a_file_says_it_is_a_file_not_a_directory(tmp_path, make, kind):
    """--checkpoint a file (a .jit archive, a lone torch file) said 'not a checkpoint (no model.pt)
    and no checkpoints/latest inside', as if it were a directory: it is a file, named for what it is."""
    from conftest import assert_one_line_error, run_in_process

    path = tmp_path / "model.jit"
    make(path)
    result = run_in_process("scripts/evaluate.py", "--checkpoint", str(path))
    assert_one_line_error(result, f"{path}: is {kind}, {ONLY_DIRECTORIES}")


def test_a_file_of_a_checkpoint_directory_points_to_that_directory(tmp_path):
    """model.pt (or any file) of a checkpoint directory given as the checkpoint: pass the directory
    that holds it, which resolves; a pointer file (`latest`) is still followed."""
    from training.engine.checkpoint import CheckpointError

    ckpt = save_checkpoint(tmp_path, 4000, PAYLOAD, {"arch": {}}, {"metrics": {}}, keep=2)
    for name in ("model.pt", "config.json"):
        with pytest.raises(CheckpointError) as caught:
            resolve_checkpoint(ckpt / name)
        assert str(caught.value) == (f"{ckpt / name}: is a file, not a checkpoint directory; pass the checkpoint "
                                     f"directory that holds it ({ckpt})")
    assert resolve_checkpoint(ckpt) == ckpt
    assert resolve_checkpoint(tmp_path / "checkpoints" / "latest") == ckpt


@pytest.mark.parametrize("protocol", [4, 5])
def test_a_zip_torch_file_of_pickle_protocol_4_or_5_is_named_so_not_corrupt(tmp_path, protocol):
    """torch.save's own zip format with pickle_protocol 4 or 5: its data.pkl opens with a frame,
    which torch's weights-only loader refuses ('Unsupported operand 149'), and the file was called
    'corrupt'. The message names the protocol as it does for the legacy format."""
    from training.engine.checkpoint import CheckpointError, load_file

    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(3)}, path, pickle_protocol=protocol)
    with pytest.raises(CheckpointError) as caught:
        load_file(path)
    message = str(caught.value)
    assert message == (f"{path}: cannot load (a torch file (pickle protocol {protocol}), which this loader cannot "
                       "read weights-only; re-save it with a current torch (torch.save's default format and "
                       "protocol))"), message


@pytest.mark.parametrize("save", [
    lambda p: torch.save({"w": torch.ones(3)}, p, _use_new_zipfile_serialization=False, pickle_protocol=4),
    lambda p: torch.save({"w": torch.ones(3)}, p, pickle_protocol=5),
    save_torchscript,
], ids=["legacy protocol 4", "zip protocol 5", "TorchScript"])
def test_a_refused_file_gets_no_torch_warning_before_its_one_line(tmp_path, save):
    """torch.load warned first ('Detected pickle protocol 4 ... please file an issue', ''torch.load'
    received a zip file that looks like a TorchScript archive'), so a command printed three lines
    of stderr before its one-line error: the refusal names the same thing, torch's warning is gone."""
    import warnings

    from training.engine.checkpoint import CheckpointError, load_file

    path = tmp_path / "model.pt"
    save(path)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="cannot load"):
            load_file(path)
    assert [str(w.message) for w in warned] == []


def test_loads_in_threads_leave_the_warning_filters_as_they_were(tmp_path, monkeypatch):
    """load_file silences torch.load's warnings with warnings.catch_warnings, which swaps the
    process's one filter list: thread A enters, B enters (saving A's filters), A leaves, B leaves
    restoring A's filters, and torch's warnings stayed ignored in the whole process for good."""
    import threading
    import warnings

    from training.engine import checkpoint

    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(1)}, path)
    a_in, b_in, a_done = threading.Event(), threading.Event(), threading.Event()

    def load(f, **kwargs):  # A waits (a while) for B to be inside too; B returns after A has left
        if threading.current_thread().name == "A":
            a_in.set()
            b_in.wait(2)
        else:
            b_in.set()
            a_done.wait(2)
        return {}

    monkeypatch.setattr(torch, "load", load)
    before = list(warnings.filters)

    def first():
        checkpoint.load_file(path)
        a_done.set()

    a = threading.Thread(target=first, name="A")
    a.start()
    a_in.wait(2)
    b = threading.Thread(target=checkpoint.load_file, args=(path,), name="B")
    b.start()
    a.join()
    b.join()
    assert warnings.filters == before
