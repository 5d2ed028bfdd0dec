"""Exported weights (safetensors, loaded without pickle) and solve.py on one's own instances."""

import json
import re

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, run_in_process, run_module
from evaluators.tasks import get_task
from training.engine.checkpoint import load_file, resolve_checkpoint
from training.inference import load_checkpoint_model, load_model


@pytest.fixture(scope="module")
def exported(runs_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "alpha"
    result = run_in_process("scripts/export.py", "--checkpoint", str(runs_zoo["alpha"]), "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["weights"] == "ema" and summary["source"]["step"] == 40
    return out


def test_export_holds_the_ema_weights_and_the_model_config(runs_zoo, exported):
    from safetensors.torch import load_file as load_safetensors

    weights = load_safetensors(str(exported / "model.safetensors"))
    ema = load_file(resolve_checkpoint(runs_zoo["alpha"]) / "ema.pt")
    raw = load_file(resolve_checkpoint(runs_zoo["alpha"]) / "model.pt")
    assert set(ema) <= set(weights) and set(weights) == set(raw)
    assert all(torch.equal(weights[k], ema[k]) for k in ema)
    assert any(not torch.equal(weights[k], raw[k]) for k in ema)  # EMA, not the raw weights
    config = json.loads((exported / "config.json").read_text())
    assert config["arch"]["name"] == "trm" and config["arch"]["hidden_size"] == 32
    assert config["data"] | {"n": 4, "max_cost": 9, "task": "lsa", "seq_len": 16} == config["data"]
    assert config["parameters"] == sum(v.numel() for k, v in raw.items() if k in ema)


def test_loader_rebuilds_the_same_model_without_pickle(runs_zoo, exported, monkeypatch):
    from_checkpoint = load_checkpoint_model(runs_zoo["alpha"])
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the export loader must not unpickle"))
    model = load_model(exported)
    assert not model.training and model.weights == "ema" and model.facts["task"] == "lsa"
    tokens = np.random.default_rng(0).integers(1, 10, size=(5, 16))
    a, b = model.solve(tokens), from_checkpoint.solve(tokens)
    assert np.array_equal(a["preds"], b["preds"]) and np.allclose(a["logits"], b["logits"])
    assert np.all((1 <= a["steps"]) & (a["steps"] <= 2))


def test_solve_refuses_inputs_the_model_cannot_read_in_one_line(exported):
    """Token ids outside the vocabulary, an empty batch, floats or booleans: an InputError naming
    the problem (not torch's IndexError from the embedding), with and without voting."""
    from core.errors import InputError

    model = load_model(exported)
    vocab, good = model.facts["vocab_size"], np.ones((2, 16), dtype=np.int64)
    cases = [(np.where(np.eye(2, 16, 3) > 0, vocab, good), f"row 0, position 3: token {vocab} is outside [0, {vocab})"),
             (np.where(np.eye(2, 16, 0) > 0, -1, good), "row 0, position 0: token -1 is outside"),
             (np.zeros((0, 16), dtype=np.int64), "with N >= 1, got (0, 16)"),
             (good + 0.5, "integer token ids, got dtype float64"),
             (good.astype(bool), "integer token ids, got dtype bool")]
    for tokens, said in cases:
        for votes in (1, 2):
            with pytest.raises(InputError, match=re.escape(said)):
                model.solve(tokens, votes=votes)
    assert model.solve(good)["preds"].shape == (2, 16)


@pytest.mark.slow
def test_export_refuses_to_overwrite_and_bad_exports_are_one_line(runs_zoo, exported, tmp_path):
    from core.errors import InputError

    again = run_module("scripts/export.py", "--checkpoint", str(runs_zoo["alpha"]), "--out", str(exported))  # real CLI
    assert_one_line_error(again, "--out", "--overwrite")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((exported / "model.safetensors").read_bytes())
    config = json.loads((exported / "config.json").read_text())
    for change, culprit in (({"arch": {**config["arch"], "name": "gpt"}}, "unknown model name 'gpt'"),
                            ({"arch": {**config["arch"], "hidden_size": 64}}, "has shape"),
                            ({"data": {**config["data"], "seq_len": "16"}}, "data.seq_len"),
                            ({"format": "other"}, "format='other'")):
        (bad / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(InputError, match=culprit):
            load_model(bad)
    (bad / "model.safetensors").write_bytes(b"\x00" * 16)
    (bad / "config.json").write_text(json.dumps(config))
    assert_one_line_error(run_in_process("scripts/solve.py", "--checkpoint", str(bad), "--input", "-", stdin=""),
                          "model.safetensors")


@pytest.fixture(scope="module")
def solve_script():
    from conftest import load_script

    return load_script("solve")


@pytest.fixture
def solved(solve_script, monkeypatch, capsys):
    """solve.py in-process: (the JSON result, what it printed)."""
    import io
    import sys
    from types import SimpleNamespace

    def run(checkpoint, text=None, path=None):
        if text is not None:
            monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(text.encode())))
        result = solve_script.solve(solve_script.SolveArgs(checkpoint=checkpoint, input=str(path or "-")))
        return json.loads(json.dumps(result)), capsys.readouterr().out

    return run


def refused(parse, text, facts, culprit):
    """parse(raw, where, facts) raises an InputError naming the culprit, on one line."""
    from core.errors import InputError

    with pytest.raises(InputError) as info:
        parse(text.encode(), "<stdin>", facts)
    assert culprit in str(info.value) and "\n" not in str(info.value)


def solve(checkpoint, text=None, path=None, *flags):
    import subprocess
    import sys

    from conftest import REPO

    args = [sys.executable, "scripts/solve.py", "--checkpoint", str(checkpoint), "--input", str(path or "-"), *flags]
    return subprocess.run(args, cwd=REPO, input=text, capture_output=True, text=True, timeout=120)


def test_solve_lsa_matches_the_evaluation_and_scipy(runs_zoo, tmp_path, solved):
    """Solving the run's own test split reproduces the evaluation's rates; costs and gaps agree with scipy."""
    from scipy.optimize import linear_sum_assignment

    data = runs_zoo["alpha"].parents[2] / "lsa4"
    costs = np.load(data / "test" / "all__inputs.npy").reshape(-1, 4, 4)
    np.save(tmp_path / "costs.npy", costs)
    result, printed = solved(runs_zoo["alpha"], path=tmp_path / "costs.npy")
    answers = result["answers"]
    assert result["task"] == "lsa" and len(answers) == 20 and "#20:" in printed
    metrics = json.loads((resolve_checkpoint(runs_zoo["alpha"]) / "meta.json").read_text())["metrics"]
    assert np.mean([a["valid"] for a in answers]) == pytest.approx(metrics["eval/lsa/valid_permutation_rate"])
    assert np.mean([a["projected_cost"] == a["optimal_cost"] for a in answers]) == pytest.approx(
        metrics["eval/lsa/projected_optimal_cost_rate"])
    for c, a in zip(costs, answers):
        rows, cols = linear_sum_assignment(c)
        assert a["optimal_cost"] == c[rows, cols].sum() and a["steps"] == 2
        assert sorted(a["projected_assignment"]) == [0, 1, 2, 3]
        if a["valid"]:
            assert a["cost"] == sum(c[r, k] for r, k in enumerate(a["assignment"])) and a["gap"] == a["cost"] - a["optimal_cost"]
        else:
            assert a["cost"] is None and a["gap"] is None

    csv = "\n\n".join("\n".join(",".join(map(str, row)) for row in m) for m in costs[:2])
    from_csv, _ = solved(runs_zoo["alpha"], text="# two matrices\n" + csv)
    assert from_csv["answers"] == answers[:2]


@pytest.mark.parametrize("text, culprit", [
    ("1,2,3\n1,2,3\n1,2,3\n", "3x3; the checkpoint was trained on 4x4"),
    ("1,2,3,4\n1,2,3,4\n1,2,3,4\n1,2,3,10\n", "cost 10 is outside the trained range 1..9"),
    ("1,2,3,4\n1,2,3,4\n1,2,3,4\n1,2,3,0\n", "cost 0 is outside"),
    ("1,2,3,4\n1,2,3,4\n1,2,3,4\n1,2,3,2.5\n", "integers"),
    ("1,2,3,4\n1,2,3,4\n1,2,3,4\n1,2,3\n", "rows of different lengths"),
    ("1,2,x,4\n", "line 1, column 3: 'x' is not a number"),
    ("", "no cost matrix"),
])
def test_solve_lsa_refuses_input_that_does_not_fit(solve_script, text, culprit):
    refused(get_task("lsa").parse, text, {"n": 4, "max_cost": 9}, culprit)


@pytest.mark.slow
def test_solve_refusals_are_one_line_and_exit_2(runs_zoo):
    assert_one_line_error(solve(runs_zoo["alpha"], text="1,2,3\n1,2,3\n1,2,3\n"), "3x3")  # the real command line
    in_process = ("scripts/solve.py", "--checkpoint", "--input", "-")
    assert_one_line_error(run_in_process(*in_process[:2], str(runs_zoo["sudoku"]), *in_process[2:], stdin=SUDOKU[:-1]),
                          "line 1")
    assert_one_line_error(run_in_process(*in_process[:2], str(runs_zoo["arith"]), *in_process[2:], stdin="12345+1"),
                          "12345")


SUDOKU = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"


def test_solve_sudoku(runs_zoo, solved):
    result, printed = solved(runs_zoo["sudoku"], text=SUDOKU + "\n" + SUDOKU.replace(".", "0") + "\n")
    answers = result["answers"]
    assert len(answers) == 2 and answers[0] == answers[1]  # '.' and '0' are the same blank
    from dataset.sudoku_solver import is_valid_solution

    grid = answers[0]["answer"]
    assert len(grid) == 81 and 1 <= answers[0]["steps"] <= 4
    kept = all(g == "." or g == a for g, a in zip(SUDOKU, grid))
    assert answers[0]["valid"] == (kept and "?" not in grid and is_valid_solution([int(c) for c in grid]))
    assert "------+-------+------" in printed


@pytest.mark.parametrize("text, culprit", [
    (SUDOKU[:-1], "line 1: expected 81 characters"),
    ("x" + SUDOKU[1:], "line 1: cell 1: 'x' is not a digit"),
    (SUDOKU[:40] + " " + SUDOKU[41:], "line 1: cell 41: ' ' is not a digit"),
    ("55" + SUDOKU[2:], "the givens repeat a digit in row 1"),
])
def test_solve_sudoku_refuses_malformed_grids(solve_script, text, culprit):
    refused(get_task("sudoku").parse, text, {}, culprit)


def test_solve_arith(runs_zoo, solved):
    result, printed = solved(runs_zoo["arith"], text="12+345\n9999 + 1 =\n0+0\n")
    answers = result["answers"]
    assert [a["expression"] for a in answers] == ["12+345", "9999 + 1 =", "0+0"]
    for a, truth in zip(answers, (357, 10000, 0)):
        assert a["correct"] == (a["answer"] == str(truth)) and (a["answer"] is not None) == a["valid"]
        assert a["expected"] == str(truth)
    assert "12 + 345 = " in printed


@pytest.mark.parametrize("text, culprit", [
    ("12345+1", "12345 has 5 digits; the checkpoint reads at most 4"),
    ("12*3", "operation '*', but the checkpoint was trained on '+'"),
    ("1a+3", "'1a' is not a base-10 number"),
    ("12 plus 3", "expected 'a + b'"),
])
def test_solve_arith_refuses_what_the_checkpoint_cannot_read(solve_script, runs_zoo, text, culprit):
    facts = json.loads((resolve_checkpoint(runs_zoo["arith"]) / "meta.json").read_text())["dataset"]
    refused(get_task("arith").parse, text, facts, culprit)


def test_solve_missing_input_file(solve_script, tmp_path):
    from core.errors import InputError

    with pytest.raises(InputError, match="nope.csv: file not found"):
        solve_script.read_input(str(tmp_path / "nope.csv"))
