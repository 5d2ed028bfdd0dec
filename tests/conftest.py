"""Shared fixtures. The default suite is CPU-only; GPU tests are marked `gpu` and skipped
where CUDA is absent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def run_module(*args: str, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python <args>` in a subprocess from the repo root, capturing output."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def build_lsa(out: Path, **overrides) -> Path:
    from dataset.build_lsa_dataset import LSABuildConfig, build_lsa_dataset

    args = dict(output_dir=out, n=4, max_cost=9, num_train=40, num_test=10, num_aug=3, seed=0, progress=False)
    args.update(overrides)
    return build_lsa_dataset(LSABuildConfig(**args))


@pytest.fixture(scope="session")
def lsa_small(tmp_path_factory) -> Path:
    """A small 4x4 LSA dataset (40 x 4 train, 10 test), built once per session."""
    return build_lsa(tmp_path_factory.mktemp("data") / "lsa4")
