"""compare_runs.py, plot_run.py, visualize_dataset.py and the example renderers."""

import json

import numpy as np
import pytest

from conftest import assert_one_line_error, load_script, run_in_process, run_module
from training.engine.checkpoint import load_file, resolve_checkpoint


def read_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(str(path))


def test_compare_runs(runs_zoo, capsys):
    compare = load_script("compare_runs")
    compare.main(["alpha", "beta", "--runs-dir", str(runs_zoo["runs_dir"]), "--json"])
    result = json.loads(capsys.readouterr().out)
    alpha, beta = result["runs"]
    for run, key in ((alpha, "alpha"), (beta, "beta")):
        ema = load_file(resolve_checkpoint(runs_zoo[key]) / "ema.pt")  # every parameter, puzzle embedding included
        assert run["parameters"] == sum(t.numel() for t in ema.values())
        assert run["puzzle_embedding_parameters"] == ema["puzzle_emb"].numel() > 0
        assert run["steps"] == 40 and run["arch"] == "trm" and run["train_seconds"] > 0
        assert run["headline"] == "eval/lsa/optimal_cost_rate"
        assert run["headline_per_million_params"] == pytest.approx(run["headline_best"] / (run["parameters"] / 1e6))
    assert (alpha["hidden_size"], beta["hidden_size"]) == (32, 48) and beta["parameters"] > alpha["parameters"]
    differ = result["config_differences"]
    assert differ["arch.hidden_size"] == [32, 48] and differ["optim.lr"] == [0.003, 0.001]
    assert "logging.run_name" not in differ and "train.max_steps" not in differ

    compare.main([str(runs_zoo["alpha"]), str(runs_zoo["sudoku"])])
    text = capsys.readouterr().out
    assert "headline per M params" in text and "config keys that differ:" in text
    assert "eval/sudoku/valid_grid_rate" in text and "eval/lsa/optimal_cost_rate" in text


@pytest.mark.slow
def test_compare_runs_bad_input(runs_zoo, capsys):
    assert_one_line_error(run_module("scripts/compare_runs.py", "nope", "--runs-dir", str(runs_zoo["runs_dir"])), "nope")
    with pytest.raises(SystemExit) as info:
        load_script("compare_runs").main([])
    assert info.value.code == 2 and "RUN" in capsys.readouterr().err


def test_plot_run_overlays_runs(runs_zoo, tmp_path, capsys):
    load_script("plot_run").main(["alpha", "beta", "--runs-dir", str(runs_zoo["runs_dir"]),
                                  "--out", str(tmp_path / "sub" / "curves.png")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["panels"] == ["train/lm_loss", "train/accuracy", "eval/lm_loss", "eval/exact_accuracy",
                                "eval/lsa/optimal_cost_rate"]
    image = read_png(tmp_path / "sub" / "curves.png")
    assert image.shape[0] > 500 and image.shape[1] > 800 and image.std() > 0.05


def test_plot_runs_draws_one_line_per_run(runs_zoo, tmp_path, monkeypatch):
    """The figure itself: each panel holds one line per run, with the logged values."""
    from matplotlib.figure import Figure

    plot_run = load_script("plot_run")

    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self))
    plot_run.plot_runs([runs_zoo["alpha"], runs_zoo["beta"]], tmp_path / "x.png", ["train/lm_loss", "eval/lm_loss"], "time")
    axes = [ax for ax in figures[0].axes if ax.lines]
    assert len(axes) == 2 and all(len(ax.lines) == 2 for ax in axes)
    from training.bookkeeping.runs import read_metrics

    losses = [r["eval/lm_loss"] for r in read_metrics(runs_zoo["alpha"]) if "eval/lm_loss" in r]
    assert list(axes[1].lines[0].get_ydata()) == losses
    assert [t.get_text() for t in figures[0].legends[0].get_texts()] == ["alpha", "beta"]


def test_plot_run_reads_a_bare_metrics_file_when_metrics_are_named(runs_zoo, tmp_path, capsys):
    """A benchmark record (metrics.jsonl copied without config.json) plots with --metrics; without
    --metrics the headline needs config.json, so it is skipped with a line naming the file."""
    record = tmp_path / "record"
    record.mkdir()
    (record / "metrics.jsonl").write_bytes((runs_zoo["alpha"] / "metrics.jsonl").read_bytes())
    plot_run = load_script("plot_run")
    plot_run.main([str(record), "--out", str(tmp_path / "r.png"), "--metrics", "eval/lsa/optimal_cost_rate", "--x", "time"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["panels"] == ["eval/lsa/optimal_cost_rate"]
    assert read_png(tmp_path / "r.png").std() > 0.05
    from core.errors import InputError

    with pytest.raises(InputError, match="none of the 1 run"):
        plot_run.main([str(record), "--out", str(tmp_path / "s.png")])
    err = capsys.readouterr().err
    assert "config.json" in err and "--metrics" in err and not (tmp_path / "s.png").exists()  # says how
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="none of the 1 run"):
        plot_run.main([str(empty), "--out", str(tmp_path / "t.png"), "--metrics", "eval/lm_loss"])
    assert "neither config.json nor metrics.jsonl" in capsys.readouterr().err


def test_plot_run_against_training_seconds(runs_zoo, tmp_path, monkeypatch):
    """--x train_seconds puts each evaluation at the run's training clock (train/seconds)."""
    from matplotlib.figure import Figure

    from training.bookkeeping.runs import read_metrics

    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self))
    load_script("plot_run").plot_runs([runs_zoo["alpha"]], tmp_path / "x.png", ["eval/exact_accuracy"], "train_seconds")
    evals = [r for r in read_metrics(runs_zoo["alpha"]) if "eval/exact_accuracy" in r]
    (line,) = [ax for ax in figures[0].axes if ax.lines][0].lines
    assert list(line.get_xdata()) == [r["train/seconds"] for r in evals] != [r["time"] for r in evals]
    assert "training seconds" in figures[0].axes[0].get_xlabel()


def test_plot_run_draws_no_empty_panel(runs_zoo, tmp_path, capsys):
    """Training metrics have no train/seconds (it is logged with evaluations): against --x
    train_seconds the default panels leave them out, and one named with --metrics is an error
    naming it, with nothing written; so is a record whose train/seconds is never finite."""
    from core.errors import InputError

    plot_run = load_script("plot_run")
    args = ["alpha", "--runs-dir", str(runs_zoo["runs_dir"]), "--x", "train_seconds"]
    plot_run.main([*args, "--out", str(tmp_path / "a.png")])
    panels = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["panels"]
    assert panels == ["eval/lm_loss", "eval/exact_accuracy", "eval/lsa/optimal_cost_rate"]
    with pytest.raises(InputError, match=r"--metrics train/lm_loss: .*'train/seconds' \(--x train_seconds\); "
                                         r"train/seconds is logged with evaluations only"):
        plot_run.main([*args, "--out", str(tmp_path / "b.png"), "--metrics", "eval/lm_loss,train/lm_loss"])
    plot_run.main([*args[:-1], "step", "--out", str(tmp_path / "c.png"), "--metrics", "eval/lm_loss,train/lm_loss"])
    nan = tmp_path / "nan"
    nan.mkdir()
    lines = [json.loads(line) for line in (runs_zoo["alpha"] / "metrics.jsonl").read_text().splitlines()]
    (nan / "metrics.jsonl").write_text("".join(json.dumps({**r, "train/seconds": float("nan")} if "train/seconds" in r
                                                          else r) + "\n" for r in lines))
    with pytest.raises(InputError, match="--metrics eval/lm_loss: no record of these runs has a finite value"):
        plot_run.main([str(nan), "--x", "train_seconds", "--out", str(tmp_path / "d.png"), "--metrics", "eval/lm_loss"])
    (nan / "config.json").write_bytes((runs_zoo["alpha"] / "config.json").read_bytes())
    with pytest.raises(InputError, match="no point to draw against --x train_seconds"):
        plot_run.main([str(nan), "--x", "train_seconds", "--out", str(tmp_path / "e.png")])
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["a.png", "c.png"]


@pytest.mark.parametrize("metrics, message", [
    (",", "--metrics ',': item 1 of 2 is empty"),  # was: "--metrics : not logged by these runs"
    ("train/lm_loss,", "--metrics 'train/lm_loss,': item 2 of 2 is empty"),
    ("train/lm_loss,,eval/lm_loss", "item 2 of 3 is empty"),
    ("", "--metrics '': is empty"),  # was: the default panels, as if --metrics were not given
    ("train/lm_loss,train/lm_loss", "train/lm_loss is named twice"),  # was: the same panel twice
])
def test_plot_run_metrics_list_with_an_empty_item(runs_zoo, tmp_path, metrics, message):
    result = run_in_process("scripts/plot_run.py", "alpha", "--runs-dir", str(runs_zoo["runs_dir"]), "--out",
                            str(tmp_path / "a.png"), "--metrics", metrics)
    assert_one_line_error(result, message)
    assert not any(tmp_path.iterdir())


def test_plot_run_metrics_may_have_spaces_after_commas(runs_zoo, tmp_path, capsys):
    load_script("plot_run").main(["alpha", "--runs-dir", str(runs_zoo["runs_dir"]), "--out", str(tmp_path / "a.png"),
                                  "--metrics", "train/lm_loss, eval/lm_loss"])
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["panels"] == ["train/lm_loss", "eval/lm_loss"]


def test_plot_run_says_which_folders_it_created(runs_zoo, tmp_path, capsys):
    """Missing folders above --out are created, as every tool's --out does (export, ttc_sweep,
    visualize_dataset, scaling, evaluate --save-predictions): not silently, the `wrote` line says so."""
    plot_run = load_script("plot_run")
    runs = str(runs_zoo["runs_dir"])
    plot_run.main(["alpha", "--runs-dir", runs, "--out", str(tmp_path / "new" / "deeper" / "a.png")])
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"wrote {tmp_path}/new/deeper/a.png (created the folders {tmp_path}/new/deeper, "
                     f"new from {tmp_path}/new)"), first
    plot_run.main(["alpha", "--runs-dir", runs, "--out", str(tmp_path / "new" / "other" / "b.png")])
    assert capsys.readouterr().out.splitlines()[0] == f"wrote {tmp_path}/new/other/b.png (created the folder {tmp_path}/new/other)"
    plot_run.main(["alpha", "--runs-dir", runs, "--out", str(tmp_path / "new" / "c.png")])
    assert capsys.readouterr().out.splitlines()[0] == f"wrote {tmp_path}/new/c.png"
    assert (tmp_path / "new" / "deeper" / "a.png").is_file() and (tmp_path / "new" / "c.png").is_file()


@pytest.mark.slow
def test_plot_run_bad_input(runs_zoo, tmp_path):
    from core.errors import InputError

    runs = str(runs_zoo["runs_dir"])
    assert_one_line_error(run_module("scripts/plot_run.py", "alpha", "--runs-dir", runs, "--out", str(tmp_path / "a.png"),
                                     "--metrics", "eval/nope"), "--metrics eval/nope")
    with pytest.raises(InputError, match="--out"):
        load_script("plot_run").main(["alpha", "--runs-dir", runs, "--out", str(tmp_path / "a.jpg")])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv", [
    ("scripts/plot_run.py", "some-run", "--out", ""),  # was: "--out .: expected a .png file name"
    ("scripts/plot_run.py", "some-run", "--out="),
    ("scripts/export.py", "--checkpoint", "some-run", "--out", ""),  # was: "--out .: refused: it is the current directory"
    ("scripts/ttc_sweep.py", "--checkpoint", "some-run", "--out", ""),  # was: "--out .: exists and is not an empty directory"
    ("scripts/visualize_dataset.py", "--data", "some-data", "--out", ""),  # with a dataset: wrote its pictures here
    ("scripts/scaling.py", "--report-only", "--out", ""),  # was: "scaling.json is missing" (read from .)
    ("scripts/evaluate.py", "--checkpoint", "some-run", "--save-predictions", ""),
])
def test_an_empty_output_path_is_refused_by_name(argv, tmp_path, monkeypatch):
    """`--out ''` (an unset shell variable) is not the current directory: one line naming the flag."""
    monkeypatch.chdir(tmp_path)
    flag = next(word.split("=")[0] for word in argv if word.startswith("--out") or word == "--save-predictions")
    result = run_in_process(*argv)
    assert_one_line_error(result, f"{flag}: is empty (it would mean the current directory)")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("link", ["dangling", "loop"])
@pytest.mark.parametrize("argv", [
    ("scripts/export.py", "--checkpoint", "RUN", "--out", "OUT"),  # was: wrote the export into the link's target
    ("-m", "dataset.build_lsa_dataset", "--output-dir", "OUT", "--no-progress", "--n", "3", "--num-train", "10",
     "--num-test", "4", "--num-aug", "1"),  # was: wrote the dataset into the link's target
    ("scripts/ttc_sweep.py", "--checkpoint", "some-run", "--out", "OUT"),  # was: on to the run, mkdir's "File exists" last
    ("scripts/plot_run.py", "some-run", "--out", "OUT/a.png"),
    ("scripts/visualize_dataset.py", "--data", "some-data", "--out", "OUT"),
    ("scripts/scaling.py", "--config-name", "cfg_lsa_cpu", "--sizes", "4", "--out", "OUT"),
    ("scripts/evaluate.py", "--checkpoint", "some-run", "--save-predictions", "OUT"),  # was: mkdir's error after scoring
])
def test_an_output_path_through_a_broken_link_is_refused_by_name(argv, link, tmp_path, monkeypatch, request):
    """An output path at or below a dangling symbolic link (or a loop of them) cannot be created:
    one line naming the flag and the link, before anything is written (never the link's target)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link").symlink_to("nowhere" if link == "dangling" else "link")
    run = str(request.getfixturevalue("runs_zoo")["alpha"]) if "RUN" in argv else None
    argv = [run if word == "RUN" else word.replace("OUT", "link/new") for word in argv]
    flag = argv[argv.index(next(w for w in argv if w.startswith("link/"))) - 1]
    kind = "a dangling symbolic link, to nowhere" if link == "dangling" else "a symbolic link loop, to link"
    assert_one_line_error(run_in_process(*argv), f"{flag} link/new", f"(link is {kind})")
    assert [p.name for p in tmp_path.iterdir()] == ["link"]


@pytest.mark.parametrize("argv, culprit", [
    (("scripts/evaluate.py", "--checkpoint", ""), "--checkpoint: is empty"),  # was: ".: not a checkpoint"
    (("scripts/evaluate.py", "--checkpoint", "r", "--runs-dir", ""), "--runs-dir: is empty"),
    (("scripts/evaluate.py", "--checkpoint", "r", "--data", ""), "--data: is empty"),
    (("scripts/export.py", "--checkpoint", "", "--out", "x"), "--checkpoint: is empty"),
    (("scripts/solve.py", "--checkpoint", "", "--input", "x"), "--checkpoint: is empty"),
    (("scripts/ttc_sweep.py", "--checkpoint", "r", "--out", "x", "--data", ""), "--data: is empty"),
    (("scripts/visualize_dataset.py", "--data", "", "--out", "x"), "--data: is empty"),
    (("scripts/list_runs.py", "--runs-dir", ""), "--runs-dir: is empty"),
    (("scripts/compare_runs.py", "a", "b", "--runs-dir", ""), "--runs-dir: is empty"),
    (("scripts/plot_run.py", "a", "--out", "p.png", "--runs-dir", ""), "--runs-dir: is empty"),
    (("scripts/scaling.py", "--config-name", "cfg_lsa_cpu", "--sizes", "4", "--out", "o", "--runs-dir", ""),
     "--runs-dir: is empty"),
    (("-m", "dataset.build_lsa_dataset", "--output-dir", ""), "--output-dir: is empty"),  # was: "--output-dir .: refused"
    (("-m", "dataset.build_sudoku_dataset", "--output-dir", "x", "--source-csv", ""), "--source-csv: is empty"),
    (("scripts/plot_run.py", "", "--out", "p.png"), "'': an empty run"),  # was: the current directory taken as a run
    (("scripts/compare_runs.py", "", "b"), "'': an empty run"),
])
def test_an_empty_input_path_is_refused_by_name(argv, culprit, tmp_path, monkeypatch):
    """An empty path argument (an unset shell variable) is not the current directory: one line naming
    the flag (or the empty run), nothing written."""
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_in_process(*argv), culprit)
    assert not any(tmp_path.iterdir())


def test_optional_path_options_still_say_path_in_help():
    """The empty-path refusal on an optional path option keeps its --help metavar PATH (not TEXT)."""
    help_text = " ".join(run_in_process("scripts/evaluate.py", "--help").stdout.split())
    assert "[--data PATH]" in help_text and "[--save-predictions PATH]" in help_text
    help_text = " ".join(run_in_process("-m", "dataset.build_sudoku_dataset", "--help").stdout.split())
    assert "[--source-csv PATH]" in help_text and "[--source-test-csv PATH]" in help_text


@pytest.mark.parametrize("task", ["lsa", "sudoku", "arith"])
def test_visualize_dataset(runs_zoo, tmp_path, task):
    data = {"lsa": runs_zoo["alpha"].parents[2] / "lsa4", "sudoku": runs_zoo["runs_dir"].parent / "cfg_sudoku_cpu",
            "arith": runs_zoo["runs_dir"].parent / "cfg_arith_cpu"}[task]
    script = load_script("visualize_dataset")
    files = script.visualize(script.VisualizeArgs(data=data, out=tmp_path / "pics", count=3, start=1))
    assert [f.name for f in files] == ["test_00001.png", "test_00002.png", "test_00003.png"]
    images = [read_png(tmp_path / "pics" / name) for name in ("test_00001.png", "test_00002.png")]
    assert all(im.shape[0] > 200 and im.std() > 0.05 for im in images)
    assert not np.array_equal(images[0], images[1])  # two different examples


@pytest.mark.slow
def test_visualize_dataset_bad_input(runs_zoo, tmp_path):
    from core.errors import InputError

    data = runs_zoo["alpha"].parents[2] / "lsa4"
    assert_one_line_error(run_module("scripts/visualize_dataset.py", "--data", str(tmp_path / "none"), "--out",
                                     str(tmp_path / "p")), "none")
    script = load_script("visualize_dataset")
    with pytest.raises(InputError, match="--start 20"):
        script.visualize(script.VisualizeArgs(data=data, out=tmp_path / "p", start=20))


def test_renderers_show_the_models_answer(runs_zoo):
    """With predictions, each renderer marks right and wrong; the text form agrees."""
    from evaluators.render import RIGHT, WRONG, WRONG_HATCH, describe_example, render_example

    lsa = {"task": "lsa", "n": 3, "max_cost": 9}
    costs = np.array([1, 9, 9, 9, 1, 9, 9, 9, 1])
    target = np.array([2, 1, 1, 1, 2, 1, 1, 1, 2])
    swapped = np.array([1, 2, 1, 2, 1, 1, 1, 1, 2])
    fig = render_example(lsa, costs, target, swapped)
    colors = [line.get_color() for line in fig.axes[0].lines]
    assert colors.count(RIGHT) == 1 and colors.count(WRONG) == 2
    assert "model: cost 19" in fig.axes[0].get_title()
    assert describe_example(lsa, costs, target, swapped) == {
        "input": "1 9 9; 9 1 9; 9 9 1", "target": "[0, 1, 2] (cost 3)", "prediction": "[1, 0, 2] (cost 19)",
        "correct": False}
    assert describe_example(lsa, costs, target, target)["correct"] is True

    facts = json.loads((resolve_checkpoint(runs_zoo["arith"]) / "meta.json").read_text())["dataset"]
    layout = facts["layout"]
    from dataset.build_arith_dataset import ArithLayout, encode_problems

    lay = ArithLayout.model_validate(layout)
    inputs, labels = encode_problems(np.array([[2, 1, 0, 0]], np.uint8), np.array([[5, 4, 3, 0]], np.uint8),
                                     np.array([[7, 5, 3, 0, 0]], np.uint8), lay)
    wrong = labels.copy()
    wrong[0, lay.answer_start] += 1
    row = describe_example(facts, inputs[0], labels[0], wrong[0])
    assert row == {"input": "12 + 345", "target": "00357", "prediction": "00358", "correct": False}
    fig = render_example(facts, inputs[0], labels[0], wrong[0])
    colors = [t.get_color() for t in fig.axes[0].texts if t.get_text().isdigit()]
    assert colors.count(WRONG) == 1 and colors.count(RIGHT) == 4
    assert [p.get_hatch() for p in fig.axes[0].patches] == [WRONG_HATCH]  # the wrong digit by shape too

