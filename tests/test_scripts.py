"""Logging integrations and script helpers (train_lsa.sh: tests/test_launch.py)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

TINY = ["data.build_args.num_train=40", "data.build_args.num_test=10", "train.max_steps=4", "train.eval_interval=2",
        "train.global_batch_size=16", "logging.progress=false"]


def pythonpath():
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """A real pretrain.py run with wandb left to choose (auto): not logged in, it goes offline.
    Returns (the folder holding data/, runs/ and the isolated home/, the finished process).
    Tests that change the run copy it first."""
    root = tmp_path_factory.mktemp("wandb")
    env = {**os.environ, "PYTHONPATH": pythonpath(), "WANDB_SILENT": "true"}
    env.pop("WANDB_MODE", None)
    env.pop("WANDB_API_KEY", None)
    env["NETRC"] = str(root / "no-netrc")  # not logged in -> auto mode must pick offline
    env["HOME"] = str(root / "home")  # wandb must write nothing outside the run (its caches and logs)
    for variable in ("XDG_CACHE_HOME", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_DIR"):
        env.pop(variable, None)
    (root / "home").mkdir()
    result = subprocess.run(
        [sys.executable, "pretrain.py", "--config-name", "cfg_lsa_cpu", f"data.path={root / 'data'}",
         f"logging.runs_dir={root / 'runs'}", "logging.run_name=wb", *TINY],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    return root, result


@pytest.mark.slow
def test_wandb_offline_run_logs_locally(wandb_run):
    tmp_path, result = wandb_run
    assert result.returncode == 0, result.stderr
    # (Library caches such as matplotlib's font list are the library's business, not the run's.)
    assert [str(p.relative_to(tmp_path)) for p in (tmp_path / "home").rglob("*") if "wandb" in p.name] == []
    wandb_dir = tmp_path / "runs" / "trm-lsa-cpu" / "wb" / "wandb"
    (offline,) = [p for p in wandb_dir.iterdir() if p.name.startswith("offline-run-")]
    # At each evaluation (steps 2 and 4): a table of 4 test examples and 4 pictures of them.
    media = offline / "files" / "media"
    tables = sorted((media / "table" / "eval").glob("examples_*.table.json"))
    assert [t.name.split("_")[1] for t in tables] == ["2", "4"]
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["index", "input", "target", "prediction", "correct", "steps"] and len(table["data"]) == 4
    assert len(list((media / "images" / "eval").glob("pictures_4_*.png"))) == 4
    binary = next(offline.glob("run-*.wandb")).read_bytes()
    assert b"lsa-trm" in binary and b"mixer:attention" in binary  # group and tag
    run_file = json.loads((wandb_dir.parent / "run.json").read_text())
    assert run_file["wandb_id"] == offline.name.rsplit("-", 1)[-1] and run_file["wandb_mode"] == "offline"


@pytest.mark.slow
def test_resume_continues_the_same_wandb_run(wandb_run, tmp_path):
    from training.engine.checkpoint import load_file, resolve_checkpoint

    source, first = wandb_run
    assert first.returncode == 0, first.stderr
    for name in ("data", "runs"):  # a copy: the resume below adds to the run
        shutil.copytree(source / name, tmp_path / name, symlinks=True)
    env = {**os.environ, "PYTHONPATH": pythonpath(), "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    run_dir = tmp_path / "runs" / "trm-lsa-cpu" / "wb"
    wandb_id = load_file(resolve_checkpoint(run_dir) / "state.pt")["wandb_id"]
    assert wandb_id
    second = subprocess.run([sys.executable, "pretrain.py", "--config-name", "cfg_lsa_cpu",
                             f"data.path={tmp_path / 'data'}", f"logging.runs_dir={tmp_path / 'runs'}",
                             "logging.run_name=wb", *TINY, "train.resume=true", "train.max_steps=6"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert load_file(resolve_checkpoint(run_dir) / "state.pt")["wandb_id"] == wandb_id
    runs = [p.name for p in (run_dir / "wandb").iterdir() if p.name.startswith("offline-run-")]
    assert len(runs) == 2 and all(name.endswith(wandb_id) for name in runs)


def test_wandb_mode_resolution(monkeypatch, tmp_path):
    from training.bookkeeping.logger import resolve_wandb_mode

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_wandb_mode("auto") == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    (tmp_path / "netrc").chmod(0o600)
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "disabled"
    assert resolve_wandb_mode("offline") == "offline"  # an explicit config wins


def test_profile_kernel_families():
    """Kernel names seen on an H200 (scripts/profile_step.py): cuDNN's attention kernels look
    like GEMMs (sm90, wgmma) and Inductor's name the attention they feed; neither may be
    counted as a matrix multiply."""
    sys.path.insert(0, str(REPO / "scripts"))
    from profile_step import family

    cases = {
        "nvjet_sm90_tst_192x192_64x4_2x1_v_bz_coopB_TNN": "matmul",
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64": "matmul",
        "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x64": "attention",
        "pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128>>": "attention",
        "triton_poi_fused__scaled_dot_product_cudnn_attention__to_copy__unsafe_view_add_cat": "triton (fused)",
        "triton_per_fused__to_copy__unsafe_view_add_mean_mul_pow_rsqrt_7": "triton (fused)",
        "Memcpy HtoD (Pageable -> Device)": "copy/fill",
        "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>": "copy/fill",
        "ncclKernel_AllReduce_RING_LL_Sum_float": "other",
    }
    assert {name: family(name) for name in cases} == cases


def test_benchmark_timed_passes_counts_calls_and_zero_skips():
    """--eval-passes N runs the evaluation N + 1 times (the first untimed); 0 runs it not at all."""
    sys.path.insert(0, str(REPO / "scripts"))
    from benchmark import timed_passes

    calls = []
    rates = timed_passes(torch.device("cpu"), 2, 10, lambda: calls.append(1))
    assert len(calls) == 3 and len(rates) == 2 and all(r > 0 for r in rates)
    calls.clear()
    assert timed_passes(torch.device("cpu"), 0, 10, lambda: calls.append(1)) == [] and calls == []


def test_benchmark_first_call_timed_keeps_only_the_first_call():
    """--time-updates: the wrapped update's first call is timed (its compile), later ones not."""
    sys.path.insert(0, str(REPO / "scripts"))
    from benchmark import first_call_timed

    times, calls = {}, []
    fn = first_call_timed(lambda x: calls.append(x) or x + 1, torch.device("cpu"), times, "optimizer")
    assert fn(1) == 2 and list(times) == ["optimizer"]
    first = times["optimizer"]
    assert fn(5) == 6 and times == {"optimizer": first} and calls == [1, 5]


def test_benchmark_cold_then_warm_share_one_new_cache(monkeypatch):
    """--compile-cache fresh: the cold and the warm run get the same new, empty cache directory,
    and the result carries both first steps (the rest from the warm run)."""
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark

    seen = []

    def child(argv, cache_dir):
        seen.append((argv, cache_dir, sorted(Path(cache_dir).iterdir())))
        Path(cache_dir, "written").touch()  # what the cold run leaves for the warm one
        return {"compiled": True, "first_step_seconds": 30.0 if len(seen) == 1 else 3.0,
                "steps_per_sec": 9.0 + len(seen)}

    monkeypatch.setattr(benchmark, "run_child", child)
    result = benchmark.cold_and_warm(["--config-name", "cfg_lsa"])
    assert [s[0] for s in seen] == [["--config-name", "cfg_lsa"]] * 2 and seen[0][1] == seen[1][1]
    assert seen[0][2] == [] and [p.name for p in seen[1][2]] == ["written"]
    assert not Path(seen[0][1]).exists()  # removed afterwards
    assert result["first_step_seconds_cold"] == 30.0 and result["first_step_seconds_warm"] == 3.0
    assert result["steps_per_sec"] == 11.0 and result["steps_per_sec_cold_run"] == 10.0


def test_benchmark_prints_the_reference_only_for_its_setup():
    sys.path.insert(0, str(REPO / "scripts"))
    import benchmark
    from dataset.common import DatasetMetadata
    from models import build_model, validate_arch

    meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=12, seq_len=81,
                           num_puzzle_identifiers=3, total_groups=1, mean_puzzle_examples=1.0, total_puzzles=1,
                           sets=["all"])
    def build(**arch):
        return build_model(validate_arch({"name": "trm", **arch}), meta, torch.device("meta"))

    model, mlp, small = build(), build(mixer="mlp"), build(hidden_size=256)
    assert benchmark.reference_figures(model, 768) == {"steps_per_sec": 9.81, "peak_memory_gib": 19.7}
    assert benchmark.reference_figures(mlp, 768)["steps_per_sec"] == 7.33
    assert benchmark.reference_figures(model, 256) is None and benchmark.reference_figures(small, 768) is None
    assert benchmark.beside(10.0, ".2f", {"steps_per_sec": 8.0}, "steps_per_sec") == "10.00  (reference 8.00, 1.25x)"
    assert benchmark.beside(None, ".2f", None, "steps_per_sec") == "n/a"


@pytest.mark.slow
def test_benchmark_script_on_cpu(tmp_path):
    """scripts/benchmark.py end to end on the CPU preset, shrunk: a table, then one JSON line."""
    from conftest import run_module

    out = run_module("scripts/benchmark.py", "--config-name", "cfg_lsa_cpu", "--steps", "2", "--windows", "2",
                     "--warmup", "1", "--eval-passes", "1", "--reference-loop", f"data.path={tmp_path / 'data'}",
                     "data.build_args.num_train=60", "data.build_args.num_test=50", "arch.hidden_size=32",
                     "arch.num_heads=2", f"logging.runs_dir={tmp_path / 'runs'}")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and not result["compiled"]
    assert len(result["steps_per_sec_windows"]) == 2 and result["steps_per_sec"] > 0
    assert result["samples_per_sec"] == pytest.approx(result["steps_per_sec"] * result["global_batch_size"])
    assert result["eval_examples"] == 50 and result["eval_batch_size"] == 56 and result["eval_samples_per_sec"] > 0
    assert result["flops_per_step"] > 0 and "MFU" in out.stdout
    assert result["eval_samples_per_sec_reference_loop"] > 0 and "reference loop" in out.stdout
