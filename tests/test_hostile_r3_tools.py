"""Hostile input, round three, for the run tools and solve/visualize/plot (issue 17, items 5 and 8).

Each case sets up damage in copies of the session's zoo of tiny finished runs (conftest.runs_zoo)
and runs one real command line in this process, through `run_cli` as `__main__` does. It must end
one of three ways, and leave every watched file byte-for-byte unchanged:
  "error": exit 2 and one `error:` line on stderr naming the culprit;
  "skip":  exit 0, the damaged run is one `skipped:` line naming the culprit, the others are listed;
  "ok":    exit 0, nothing on stderr, and the case's own check of the result holds.
The run tools' choice: exit 0 when at least one run could be read, 2 when every run is damaged."""

import io
import json
import math
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, load_script


@pytest.fixture(scope="module")
def zoo(runs_zoo, tmp_path_factory):
    """The session's runs plus an export of the LSA run `alpha`, made once."""
    from training.inference import export_model

    root = tmp_path_factory.mktemp("r3tools")
    export_model(runs_zoo["alpha"], root / "export")
    return {**runs_zoo, "export": root / "export", "lsa_data": runs_zoo["alpha"].parents[2] / "lsa4",
            "arith_data": runs_zoo["runs_dir"].parent / "cfg_arith_cpu"}


def run_tool(*argv: str) -> subprocess.CompletedProcess:
    """`python scripts/<argv[0]>.py argv[1:]`, in this process, through run_cli."""
    from core.cli import run_cli

    module = load_script(argv[0])
    out, err, code = io.StringIO(), io.StringIO(), 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            run_cli(lambda: module.cli(list(argv[1:])) if hasattr(module, "cli") else module.main(list(argv[1:])))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(list(argv), code, out.getvalue(), err.getvalue())


def entry_digest(p: Path):
    if p.is_symlink():
        return ("link", os.readlink(p))
    if p.is_file():
        try:
            return p.read_bytes()
        except PermissionError:  # a case made it unreadable: its mode stands for it
            return ("mode", p.stat().st_mode)
    return ("dir" if p.is_dir() else "other", p.exists())


def digest(path: Path):
    """Every entry below `path` (names as bytes: some are not UTF-8): file bytes, link targets, kinds."""
    if path.is_dir() and not path.is_symlink():
        return sorted((os.fsencode(p.relative_to(path)), entry_digest(p)) for p in path.rglob("*"))
    return entry_digest(path)


# ---------------------------------------------------------------------------------------------
# Building blocks


def runs_copy(z, t, names=("alpha", "beta")) -> Path:
    """A runs directory holding copies of the named zoo runs; returns it."""
    for name in names:
        shutil.copytree(z[name], t / "runs" / z[name].parent.name / z[name].name)
    return t / "runs"


def ckpt(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


def edit_json(path: Path, fn) -> None:
    value = json.loads(path.read_text())
    fn(value)
    path.write_text(json.dumps(value))


def write_npy(t: Path, array: np.ndarray) -> Path:
    np.save(t / "costs.npy", array, allow_pickle=True)
    return t / "costs.npy"


def put(t: Path, data: bytes) -> Path:
    (t / "h.npy").write_bytes(data)
    return t / "h.npy"


def good_costs(z) -> np.ndarray:
    return np.load(z["lsa_data"] / "test" / "all__inputs.npy")[:2].reshape(-1, 4, 4).astype(np.int64)


def raw_npy(header: bytes, data: bytes = b"") -> bytes:
    """A version 1.0 .npy with this header dict text, padded as numpy pads it."""
    total = 10 + len(header) + 1
    header += b" " * ((64 - total % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def case_solve(make_input, culprit, expect="error", checkpoint="alpha", flags=(), check=None):
    """solve.py on the input `make_input(z, t)` writes (a path), with the zoo checkpoint named."""
    def setup(z, t):
        source = z[checkpoint]
        return dict(argv=["solve", "--checkpoint", str(source), "--input", str(make_input(z, t)), *flags],
                    watched=[source], culprit=culprit, expect=expect, check=check)
    return setup


def case_csv(text, culprit):
    def make(z, t):
        (t / "costs.csv").write_text(text)
        return t / "costs.csv"
    return case_solve(make, culprit)


def case_tampered_run(mutate, culprit, run="alpha"):
    """solve.py on a copy of a zoo run whose files `mutate(run_dir)` changed."""
    def setup(z, t):
        copy = runs_copy(z, t, (run,)) / z[run].parent.name / z[run].name
        mutate(copy)
        (t / "in.txt").write_text("1,2,3,4\n" * 4 if run == "alpha" else "12+34\n")
        return dict(argv=["solve", "--checkpoint", str(copy), "--input", str(t / "in.txt")], watched=[copy],
                    culprit=culprit, expect="error")
    return setup


def case_tampered_export(mutate, culprit):
    def setup(z, t):
        copy = t / "export"
        shutil.copytree(z["export"], copy)
        mutate(copy)
        (t / "in.txt").write_text("1,2,3,4\n" * 4)
        return dict(argv=["solve", "--checkpoint", str(copy), "--input", str(t / "in.txt")], watched=[copy],
                    culprit=culprit, expect="error")
    return setup


def edit_weights(fn):
    def mutate(export: Path):
        from safetensors.torch import load_file, save_file

        state = load_file(str(export / "model.safetensors"))
        fn(state)
        save_file(state, str(export / "model.safetensors"))
    return mutate


def first_float(state: dict) -> str:
    return next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)


def case_list(damage, culprit, expect="skip", names=("alpha", "beta", "sudoku"), tool="list_runs", extra=(),
              check=None):
    """A run tool over copies of zoo runs, `damage(runs_dir)` applied to one of them."""
    def setup(z, t):
        runs = runs_copy(z, t, names)
        damage(runs)
        if tool == "list_runs":
            argv = ["list_runs", "--runs-dir", str(runs), *extra]
        elif tool == "compare_runs":
            argv = ["compare_runs", *[str(p) for p in sorted(runs.glob("*/*"))], *extra]
        else:
            argv = ["plot_run", *[str(p) for p in sorted(runs.glob("*/*"))], "--out", str(t / "curves.png"), *extra]
        return dict(argv=argv, watched=[runs], culprit=culprit, expect=expect, check=check)
    return setup


def in_run(relative: str, content):
    """Damage: the file `relative` of run alpha gets `content` (bytes; or a callable of the old bytes)."""
    def damage(runs: Path):
        path = runs / "trm-lsa-cpu" / "alpha" / relative
        path.write_bytes(content(path.read_bytes()) if callable(content) else content)
    return damage


def dir_instead(relative: str):
    def damage(runs: Path):
        path = runs / "trm-lsa-cpu" / "alpha" / relative
        path.unlink()
        path.mkdir()
    return damage


def link_instead(relative: str, target: str):
    def damage(runs: Path):
        path = runs / "trm-lsa-cpu" / "alpha" / relative
        path.unlink()
        path.symlink_to(target)
    return damage


def prepend_metrics(line: bytes):
    return in_run("metrics.jsonl", lambda old: line + b"\n" + old)


def dataset_json_damaged(runs: Path):
    """Run alpha without checkpoints, its data.path naming a dataset whose dataset.json is not UTF-8."""
    alpha = runs / "trm-lsa-cpu" / "alpha"
    shutil.rmtree(alpha / "checkpoints")
    (runs.parent / "dd" / "train").mkdir(parents=True)
    (runs.parent / "dd" / "train" / "dataset.json").write_bytes(b"\xff")
    edit_json(alpha / "config.json", lambda c: c["data"].__setitem__("path", str(runs.parent / "dd")))


def rename_run(new_name: str):
    def damage(runs: Path):
        (runs / "trm-lsa-cpu" / "alpha").rename(runs / "trm-lsa-cpu" / new_name)
    return damage


def listed(*names):
    """Check: the table has a header and exactly these runs' lines (no forged line)."""
    def check(result, t):
        lines = result.stdout.strip().splitlines()
        assert len(lines) == 1 + len(names), result.stdout
        for name in names:
            assert any(name in line for line in lines[1:]), (name, result.stdout)
    return check


def case_visualize(damage, culprit, expect="error", flags=(), data_key="lsa_data", check=None, count=2):
    """visualize_dataset.py on a copy of a zoo dataset, `damage(data, out)` applied first."""
    def setup(z, t):
        data = t / "data"
        shutil.copytree(z[data_key], data)
        out = t / "pics"
        damage(data, out, t)
        return dict(argv=["visualize_dataset", "--data", str(data), "--out", str(out), "--count", str(count), *flags],
                    watched=[data, t / "mine.png"] + ([out] if expect == "error" else []), culprit=culprit, expect=expect, check=check)
    return setup


def both_splits(fn):
    def damage(data, out, t):
        for split in ("train", "test"):
            edit_json(data / split / "dataset.json", fn)
    return damage


def existing_picture(link: bool):
    def damage(data, out, t):
        out.mkdir()
        (t / "mine.png").write_bytes(b"my own picture")
        if link:
            (out / "test_00000.png").symlink_to(t / "mine.png")
        else:
            (out / "test_00000.png").write_bytes(b"an older picture")
    return damage


def existing_plot(link: bool, flags=()):
    def setup(z, t):
        runs = runs_copy(z, t, ("alpha",))
        (t / "mine.png").write_bytes(b"my own picture")
        if link:
            (t / "curves.png").symlink_to(t / "mine.png")
        else:
            (t / "curves.png").write_bytes(b"an older plot")
        argv = ["plot_run", str(runs / "trm-lsa-cpu" / "alpha"), "--out", str(t / "curves.png"), *flags]
        watched = [runs, t / "mine.png"] + ([] if flags else [t / "curves.png"])
        return dict(argv=argv, watched=watched, culprit="--overwrite" if not link else "symbolic link",
                    expect="error" if not flags or link else "ok",
                    check=None if link or not flags else png_written)
    return setup


def png_written(result, t):
    assert (t / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not (t / "curves.png").is_symlink()
    assert not list(t.glob(".curves.png.tmp-*"))


def answers(count):
    def check(result, t):
        out = json.loads(result.stdout.strip().splitlines()[-1])
        assert len(out["answers"]) == count
    return check


NO_CUDA = not torch.cuda.is_available()

CASES = {
    # --- solve.py: .npy of other dtypes, headers, sizes -------------------------------------------
    "npy float with NaN": (case_solve(lambda z, t: write_npy(t, np.where(np.eye(4) > 0, np.nan, 3.0)), "integers")),
    "npy float of whole numbers": (case_solve(lambda z, t: write_npy(t, good_costs(z).astype(np.float64)), None,
                                              expect="ok", check=answers(2))),
    "npy bool": (case_solve(lambda z, t: write_npy(t, np.ones((4, 4), bool)), "dtype bool")),
    "npy object": (case_solve(lambda z, t: write_npy(t, np.array([[1] * 4] * 4, dtype=object)), "dtype object")),
    "npy complex": (case_solve(lambda z, t: write_npy(t, good_costs(z).astype(np.complex128)), "dtype complex128")),
    "npy strings": (case_solve(lambda z, t: write_npy(t, np.full((4, 4), "1")), "dtype <U1")),
    "npy huge header": (case_solve(lambda z, t: put(t, raw_npy(
        b"{'descr': '<i8', 'fortran_order': False, 'shape': (4, 4), " + b"'x': 0, " * 3000 + b"}")), "h.npy")),
    "npy header claims a huge shape": (case_solve(lambda z, t: put(t, raw_npy(
        b"{'descr': '<i8', 'fortran_order': False, 'shape': (1000000000000, 4, 4), }", b"\0" * 128)),
        "header claims")),
    "npy truncated data": (case_solve(lambda z, t: put(
        t, write_npy(t, good_costs(z)).read_bytes()[:-5]), "header claims")),
    "npy version 9": (case_solve(lambda z, t: put(t, b"\x93NUMPY\x09\x00" + b"\0" * 100),
                                 "cannot read .npy")),
    "input /dev/zero": (case_solve(lambda z, t: "/dev/zero", "more than")),
    "input a directory": (case_solve(lambda z, t: t, "is a directory")),
    "device cuda without CUDA": (case_solve(lambda z, t: write_npy(t, good_costs(z)), "--device cuda",
                                            flags=("--device", "cuda"))),
    "device of no kind": (case_solve(lambda z, t: write_npy(t, good_costs(z)), "--device warp9",
                                     flags=("--device", "warp9"))),
    # --- solve.py: CSV fields -----------------------------------------------------------------------
    "CSV empty field": (case_csv("1,2,3,4\n1,,2,3,4\n1,2,3,4\n1,2,3,4\n", "line 2, column 2: empty field")),
    "CSV trailing comma": (case_csv("1,2,3,4,\n1,2,3,4\n1,2,3,4\n1,2,3,4\n", "line 1, column 5: empty field")),
    "CSV nan": (case_csv("1,2,3,4\n1,2,nan,4\n1,2,3,4\n1,2,3,4\n", "line 2, column 3: 'nan' is not a number")),
    "CSV underscore number": (case_csv("1,2,3,4\n1,2,3,4\n1_0,2,3,4\n1,2,3,4\n", "line 3, column 1")),
    "CSV 5000-digit number": (case_csv("1,2,3,4\n1,2,3,4\n1,2,3,4\n1,2,3," + "9" * 5000 + "\n", "integers")),
    # --- solve.py: tampered task facts --------------------------------------------------------------
    "meta.json n disagrees with seq_len": (case_tampered_run(lambda r: edit_json(
        ckpt(r) / "meta.json", lambda m: m["dataset"].__setitem__("n", 5)), "dataset.n=5")),
    "meta.json max_cost beyond the vocabulary": (case_tampered_run(lambda r: edit_json(
        ckpt(r) / "meta.json", lambda m: m["dataset"].__setitem__("max_cost", 10**6)), "dataset.max_cost=1000000")),
    "meta.json n a bool": (case_tampered_run(lambda r: edit_json(
        ckpt(r) / "meta.json", lambda m: m["dataset"].__setitem__("n", True)), "dataset.n=True")),
    "meta.json arith layout base 37": (case_tampered_run(lambda r: edit_json(
        ckpt(r) / "meta.json", lambda m: m["dataset"]["layout"].__setitem__("base", 37)), "meta.json",
        run="arith")),
    "meta.json arith without layout": (case_tampered_run(lambda r: edit_json(
        ckpt(r) / "meta.json", lambda m: m["dataset"].pop("layout")), "meta.json", run="arith")),
    "export data.n tampered": (case_tampered_export(lambda e: edit_json(
        e / "config.json", lambda c: c["data"].__setitem__("n", 3)), "data.n=3")),
    "export blank identifier out of range": (case_tampered_export(lambda e: edit_json(
        e / "config.json", lambda c: c["data"].__setitem__("blank_identifier_id", 10**9)), "blank_identifier_id")),
    "export eval_halting bogus": (case_tampered_export(lambda e: edit_json(
        e / "config.json", lambda c: c.__setitem__("eval_halting", "bogus")), "eval_halting='bogus'")),
    "export NaN weights": (case_tampered_export(edit_weights(
        lambda s: s[first_float(s)].view(-1).__setitem__(0, math.nan)), "NaN")),
    "export integer weights": (case_tampered_export(edit_weights(
        lambda s: s.__setitem__(first_float(s), s[first_float(s)].to(torch.int32))), "dtype torch.int32")),
    "export config.json 5000-digit number": (case_tampered_export(lambda e: (e / "config.json").write_text(
        '{"format": ' + "9" * 5000 + "}"), "config.json: cannot read JSON")),
    "export config.json not UTF-8": (case_tampered_export(lambda e: (e / "config.json").write_bytes(b'{"\xff": 1}'),
                                                          "config.json: not UTF-8")),
    "export data a list": (case_tampered_export(lambda e: edit_json(
        e / "config.json", lambda c: c.__setitem__("data", [])), "field 'data'")),
    # --- list_runs.py: one damaged run among good ones ------------------------------------------------
    "list run.json not UTF-8": (case_list(in_run("run.json", b'{"name": "\xff\xfe"}'), "run.json: not UTF-8")),
    "list config.json not UTF-8": (case_list(in_run("config.json", b"\xff{}"), "config.json: not UTF-8")),
    "list metrics.jsonl not UTF-8": (case_list(prepend_metrics(b'{"step": 1, "x": "\xff"}'), "metrics.jsonl:1")),
    "list metrics 5000-digit number": (case_list(prepend_metrics(b'{"step": ' + b"9" * 5000 + b"}"),
                                                 "metrics.jsonl:1")),
    "list metrics step huge": (case_list(prepend_metrics(b'{"step": ' + b"9" * 100 + b"}"), "metrics.jsonl:1")),
    "list run.json created NaN": (case_list(in_run("run.json", b'{"created": NaN}'), "'created' is nan")),
    "list run.json created in year 10^12": (case_list(in_run("run.json", b'{"created": 1e30}'), "'created'")),
    "list run.json a list": (case_list(in_run("run.json", b"[1, 2]"), "run.json: expected a JSON object, got list")),
    "list run.json wandb_id a dict": (case_list(in_run("run.json", b'{"wandb_id": {"a": 1}}'), "'wandb_id'")),
    "list config.json a directory": (case_list(dir_instead("config.json"), "config.json: is not a regular file")),
    "list metrics.jsonl a directory": (case_list(dir_instead("metrics.jsonl"), "metrics.jsonl: is not a regular file")),
    "list config arch a list": (case_list(in_run("config.json", b'{"arch": [1]}'), "field 'arch' is list")),
    "list config data a string": (case_list(in_run("config.json", b'{"data": "x"}'), "field 'data' is str")),
    "list latest names elsewhere": (case_list(in_run("checkpoints/latest", b"../../beta"), "latest: names")),
    "list run.json unreadable": (case_list(lambda runs: os.chmod(runs / "trm-lsa-cpu" / "alpha" / "run.json", 0),
                                           "run.json: cannot read")),
    "list name with a newline and escapes": (case_list(rename_run("evil\nname\x1b[2J\r"), None, expect="ok",
                                                       check=listed("evil\\nname\\x1b[2J\\r", "beta", "sud"))),
    "list name with undecodable bytes": (case_list(rename_run(os.fsdecode(b"bad\xff\xfe")), None, expect="ok",
                                                   check=listed("bad\\udcff\\udcfe", "beta", "sud"))),
    "list config.json a link to /dev/zero": (case_list(link_instead("config.json", "/dev/zero"),
                                                       "config.json: is not a regular file")),
    "list metrics.jsonl a FIFO": (case_list(lambda runs: (os.unlink(runs / "trm-lsa-cpu" / "alpha" / "metrics.jsonl"),
                                                          os.mkfifo(runs / "trm-lsa-cpu" / "alpha" / "metrics.jsonl")),
                                            "metrics.jsonl: is not a regular file")),
    "list NaN and string times": (case_list(prepend_metrics(b'{"step": 1, "train/seconds": NaN, "time": "x", '
                                                            b'"eval/lm_loss": Infinity}'), None, expect="ok",
                                            check=listed("alpha", "beta", "sud"))),
    "list every run damaged": (case_list(in_run("run.json", b"[]"), "none of the 1 run(s)", names=("alpha",),
                                         expect="all damaged")),
    # --- compare_runs.py and plot_run.py ----------------------------------------------------------------
    "compare with one damaged run": (case_list(in_run("config.json", b"\xff"), "config.json", tool="compare_runs",
                                               extra=("--json",))),
    "compare config nested too deeply": (case_list(in_run("config.json", b'{"a": ' * 900 + b"1" + b"}" * 900),
                                                   "config.json", tool="compare_runs")),
    "compare a run whose dataset.json is damaged": (case_list(dataset_json_damaged, "dataset.json: not UTF-8",
                                                              tool="compare_runs")),
    "plot with one damaged run": (case_list(prepend_metrics(b"\xff"), "metrics.jsonl:1", tool="plot_run")),
    "plot NaN, infinite and huge values": (case_list(prepend_metrics(
        b'{"step": 1, "train/lm_loss": NaN, "eval/lm_loss": Infinity, "train/accuracy": ' + b"9" * 400 + b"}"),
        None, expect="ok", names=("alpha",), tool="plot_run", check=png_written)),
    "plot a run named with $ and a newline": (case_list(rename_run("a$b\nc$"), None, expect="ok", tool="plot_run",
                                                        names=("alpha",), check=png_written)),
    "plot onto an existing file": (existing_plot(link=False)),
    "plot onto a symbolic link with --overwrite": (existing_plot(link=True, flags=("--overwrite",))),
    "plot --overwrite replaces a file": (existing_plot(link=False, flags=("--overwrite",))),
    # --- visualize_dataset.py -----------------------------------------------------------------------------
    "visualize n disagrees with seq_len": (case_visualize(both_splits(lambda m: m.__setitem__("n", 3)), "n=3")),
    "visualize max_cost beyond the vocabulary": (case_visualize(both_splits(lambda m: m.__setitem__("max_cost", 99)),
                                                                "max_cost=99")),
    "visualize arith layout moved": (case_visualize(both_splits(lambda m: m["layout"].__setitem__("answer_start", 1)),
                                                    "dataset.json", data_key="arith_data")),
    "visualize onto an existing picture": (case_visualize(existing_picture(link=False), "--overwrite")),
    "visualize onto a symbolic link with --overwrite": (case_visualize(existing_picture(link=True), "symbolic link",
                                                                       flags=("--overwrite",))),
    "visualize --overwrite replaces a picture": (case_visualize(existing_picture(link=False), None, expect="ok",
                                                                flags=("--overwrite",), check=lambda r, t: (
        (t / "pics" / "test_00000.png").read_bytes()[:4] == b"\x89PNG" or pytest.fail("not replaced")))),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_tools(zoo, tmp_path, name):
    if name == "device cuda without CUDA" and not NO_CUDA:
        pytest.skip("CUDA is present here")
    if name == "list run.json unreadable" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    case = CASES[name](zoo, tmp_path)
    before = [digest(p) for p in case["watched"]]
    result = run_tool(*case["argv"])
    lines = result.stderr.strip().splitlines()
    expect, culprit = case["expect"], case["culprit"]
    if expect == "error":
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-2000:]
        assert culprit in lines[0], (culprit, lines[0])
    elif expect == "skip":
        assert result.returncode == 0 and len(lines) == 1 and lines[0].startswith("skipped:"), result.stderr[-2000:]
        assert culprit in lines[0] and "alpha" in lines[0], (culprit, lines[0])
        assert result.stdout.strip(), "the other runs must still be shown"
    elif expect == "all damaged":
        assert result.returncode == 2 and len(lines) == 2, result.stderr
        assert lines[0].startswith("skipped:") and lines[1].startswith("error:") and culprit in lines[1], lines
    else:
        assert result.returncode == 0 and not result.stderr, result.stderr[-2000:]
    if case.get("check"):
        case["check"](result, tmp_path)
    assert "Traceback" not in result.stderr
    for path, value in zip(case["watched"], before):
        assert digest(path) == value, f"{path} was changed"


def test_the_table_has_enough_rows():
    assert len(CASES) >= 25


@pytest.mark.slow
def test_list_runs_into_a_closed_pipe_is_quiet(zoo, tmp_path):
    """`list_runs.py | head -0`: no 'error: Broken pipe', no traceback; the SIGPIPE exit code."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the tool writes a byte
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        result = subprocess.run([sys.executable, str(REPO / "scripts" / "list_runs.py"), "--runs-dir",
                                 str(zoo["runs_dir"])], stdout=write_end, stderr=subprocess.PIPE, text=True,
                                timeout=300, env=env)
    finally:
        os.close(write_end)
    assert result.stderr == "" and result.returncode == 141, (result.returncode, result.stderr)
