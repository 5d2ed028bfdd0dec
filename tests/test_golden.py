"""The golden loss curve: a tiny CPU run's per-step training loss, checked in, compared in CI.

The curve pins down everything that shapes training at once (data generation and order,
initialisation, the model, the loss, the optimizers, the schedule). A deliberate change to
any of those moves it: regenerate with `python tests/test_golden.py --update` and say why in
the commit. Tolerance: relative 1e-3 per step. The run is single-threaded with a pinned torch
(.ci/run), so on one machine it repeats bit for bit (test_resilience.py checks that); the
tolerance only absorbs float differences between CPU instruction sets, which stay far below
it over 30 steps, while real changes move the curve by whole percents.
"""

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # not in the fast subset (pytest -m "not slow")

GOLDEN = Path(__file__).parent / "golden" / "lsa_tiny_losses.json"
OVERRIDES = ["train.max_steps=30", "train.log_every=1", "train.eval_interval=1000", "logging.run_name=golden"]
RELATIVE_TOLERANCE = 1e-3


def run_curve(tmp_path: Path) -> dict[str, float]:
    from conftest import build_lsa, tiny_config
    from training.loop import train

    data = build_lsa(tmp_path / "data", num_train=200, num_test=20, num_aug=3, seed=11)
    train(tiny_config(tmp_path, *OVERRIDES, data=data))
    records = [json.loads(line) for line in (tmp_path / "runs" / "trm-lsa-cpu" / "golden" / "metrics.jsonl").open()]
    return {str(r["step"]): r["train/lm_loss"] for r in records if "train/lm_loss" in r}


def test_loss_curve_matches_golden(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    curve = run_curve(tmp_path)
    assert list(curve) == list(golden["lm_loss"])
    for step, expected in golden["lm_loss"].items():
        assert curve[step] == pytest.approx(expected, rel=RELATIVE_TOLERANCE), f"step {step}"
    assert curve["30"] < 0.8 * curve["1"]  # and it is a curve that learns


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    import os
    import tempfile

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    import conftest  # noqa: F401  (threads, environment: as in the test)

    with tempfile.TemporaryDirectory() as tmp:
        curve = run_curve(Path(tmp))
    GOLDEN.write_text(json.dumps({"torch": torch.__version__, "overrides": OVERRIDES, "lm_loss": curve}, indent=1) + "\n")
    print(f"wrote {GOLDEN} ({len(curve)} steps, final loss {curve[str(len(curve))]:.4f}); threads={os.environ['OMP_NUM_THREADS']}")
