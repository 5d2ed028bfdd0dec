"""Hostile input, round four: what landed with the Maze task, test-time compute, the validation
split, the device config group, train.num_threads and scripts/scaling.py.

Each case runs one real command line in this process (as `__main__` does, through `run_cli`) on
a tiny LSA run and a tiny Maze run built once for the module. It must end one of two ways, and
leave every watched path byte-for-byte unchanged (the runs, the datasets, files it did not write):
  "error": exit 2 and one `error:` line on stderr naming each culprit;
  "ok":    exit 0, and the case's own check of the result holds.
A case that runs past HANG_SECONDS fails (a loop that never ends is a defect too)."""

import importlib
import io
import json
import shutil
import signal
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from conftest import build_lsa, load_script, task_config, tiny_config
from test_hostile_r3_tools import digest

HANG_SECONDS = 60


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny LSA run and a tiny Maze run (4 steps each), their datasets, and a Maze-Hard CSV."""
    from dataset.build_maze_dataset import MazeBuildConfig, build_maze_dataset
    from training.loop import train

    root = tmp_path_factory.mktemp("r4")
    lsa_data = build_lsa(root / "lsa4", num_train=60, num_test=20, num_aug=2)
    train(tiny_config(root, "train.max_steps=4", "train.eval_interval=4", "logging.run_name=lsa", data=lsa_data))
    maze_data = build_maze_dataset(MazeBuildConfig(output_dir=root / "maze7", size=7, num_train=20, num_test=10,
                                                   num_aug=2, min_path=4, loop_fraction=0.0, seed=0, progress=False))
    train(task_config("cfg_maze_cpu", root, f"data.path={maze_data}", "train.max_steps=4", "train.eval_interval=4",
                      "logging.run_name=maze"))
    csv = root / "good.csv"
    csv.write_text("source,question,answer,rating\n" + f"x,{MAZE_Q},{MAZE_A},0\n")
    return {"root": root, "lsa_data": lsa_data, "maze_data": maze_data, "csv": csv,
            "lsa": root / "runs" / "trm-lsa-cpu" / "lsa", "maze": root / "runs" / "trm-maze-cpu" / "maze"}


# A 7x7 maze (its shortest path: right along row 1, then down column 5) and the CSV forms.
MAZE_ROWS = ["#######", "#S    #", "# ### #", "#   # #", "### # #", "#    G#", "#######"]
MAZE_Q = "".join(MAZE_ROWS)
MAZE_A = "".join("o" if (r, c) in {(1, 2), (1, 3), (1, 4), (1, 5), (2, 5), (3, 5), (4, 5)} else ch
                 for r, row in enumerate(MAZE_ROWS) for c, ch in enumerate(row))
MAZE_TEXT = "\n".join(MAZE_ROWS) + "\n"


class Hang(Exception):
    pass


def run(argv: list[str]) -> subprocess.CompletedProcess:
    """`python -m <module> ...`, `python scripts/<x>.py ...` or `pretrain.py ...`, in this process."""
    from core.cli import run_cli

    out, err, code = io.StringIO(), io.StringIO(), 0

    def alarm(signum, frame):
        raise Hang(f"still running after {HANG_SECONDS} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                if argv[0] == "pretrain.py":
                    import pretrain

                    code = pretrain.cli(argv[1:])
                else:
                    if argv[0] == "-m":
                        module, rest = importlib.import_module(argv[1]), argv[2:]
                    else:
                        module, rest = load_script(Path(argv[0]).stem), argv[1:]
                    entry = module.cli if hasattr(module, "cli") else module.main
                    run_cli(lambda: entry(list(rest)))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


# ---------------------------------------------------------------------------------------------
# Building blocks: each returns setup(w, t) -> (argv, culprits or None for "ok", check or None)


def text_file(t: Path, data: bytes, name: str = "in.txt") -> str:
    (t / name).write_bytes(data)
    return str(t / name)


def solve_maze(data: bytes, *culprits, flags=(), check=None):
    def setup(w, t):
        return (["scripts/solve.py", "--checkpoint", str(w["maze"]), "--input", text_file(t, data), *flags],
                culprits or None, check)
    return setup


def maze_solved(count: int):
    def check(result, t):
        out = json.loads(result.stdout.strip().splitlines()[-1])
        assert len(out["answers"]) == count, result.stdout[-500:]
    return check


def tool(script: str, *flags, run_key="maze", culprits=(), check=None):
    """scripts/<script>.py --checkpoint <the run> flags (each flag may be a callable of (w, t))."""
    def setup(w, t):
        rest = [f(w, t) if callable(f) else f for f in flags]
        return [f"scripts/{script}.py", "--checkpoint", str(w[run_key]), *rest], culprits or None, check
    return setup


def sweep(*flags, culprits=(), out=None, check=None):
    """ttc_sweep.py on the maze run; --out a new folder unless `out(w, t)` names one."""
    def setup(w, t):
        target = out(w, t) if out else str(t / "sweep")
        return (["scripts/ttc_sweep.py", "--checkpoint", str(w["maze"]), "--out", target, *flags],
                culprits or None, check)
    return setup


TINY_SWEEP = ("--act-steps", "1", "--votes", "1", "--vote-policies", "majority")


def swept(cells: int):
    def check(result, t):
        report = json.loads((t / "sweep" / "ttc_sweep.json").read_text())
        assert len(report["cells"]) == cells, report
    return check


def maze_build(*flags, culprits=(), check=None):
    def setup(w, t):
        rest = [f(w, t) if callable(f) else f for f in flags]
        return (["-m", "dataset.build_maze_dataset", "--output-dir", str(t / "out"), "--no-progress", *rest],
                culprits or None, check)
    return setup


def csv_rows(*rows, header="source,question,answer,rating"):
    """A CSV file (a callable of (w, t) giving its path): the header, then `x,<q>,<a>,0` per (q, a) row."""
    def make(w, t):
        body = "".join(f"x,{q},{a},0\n" for q, a in rows)
        return text_file(t, (header + "\n" + body).encode(), "train.csv")
    return make


def import_csv(make, *culprits):
    return maze_build("--size", "7", "--source-csv", make, "--source-test-csv", lambda w, t: str(w["csv"]),
                      culprits=culprits)


def builder(module: str, *flags, culprits=()):
    def setup(w, t):
        return ["-m", f"dataset.{module}", "--output-dir", str(t / "out"), "--no-progress", *flags], culprits, None
    return setup


def pretrain_check(*overrides, culprits=()):
    """pretrain.py --check on the LSA CPU preset and the module's LSA data."""
    def setup(w, t):
        return (["pretrain.py", "--config-name", "cfg_lsa_cpu", f"data.path={w['lsa_data']}",
                 f"logging.runs_dir={t / 'runs'}", *overrides, "--check"], culprits, None)
    return setup


def scaling(*flags, culprits=(), check=None):
    def setup(w, t):
        rest = [f(w, t) if callable(f) else f for f in flags]
        return ["scripts/scaling.py", "--out", str(t / "scaling"), "--runs-dir", str(t / "runs"), *rest], culprits, check
    return setup


def report(edit=None, text=None):
    """scaling.py --report-only on a scaling.json naming the module's LSA run as the n=4 row,
    `edit(report, w)` applied (or the file's whole `text`)."""
    def setup(w, t):
        (t / "scaling").mkdir()
        record = {"command": "scripts/scaling.py --sizes 4", "config_name": "cfg_lsa_cpu", "size_arg": "n",
                  "rows": [{"n": 4, "run": str(w["lsa"])}]}
        if edit:
            edit(record, w)
        (t / "scaling" / "scaling.json").write_text(text if text is not None else json.dumps(record))
        return ["scripts/scaling.py", "--out", str(t / "scaling"), "--report-only"], None, None
    return setup


def report_error(*culprits, edit=None, text=None):
    def setup(w, t):
        argv, _, _ = report(edit, text)(w, t)
        return argv, culprits, None
    return setup


def report_written(result, t):
    assert "| 4 |" in (t / "scaling" / "scaling.md").read_text()


def row(**fields):
    return lambda r, w: r["rows"][0].update(fields)


def val_tampered(w, t, field, value, culprit):
    """evaluate.py --split val on a Maze dataset with val/ whose dataset.json has `field` = `value`."""
    data = t / "mv"
    result = run(["-m", "dataset.build_maze_dataset", "--output-dir", str(data), "--no-progress", "--size", "7",
                  "--num-train", "20", "--num-test", "10", "--num-aug", "2", "--min-path", "4", "--loop-fraction", "0",
                  "--val-size", "3"])
    assert result.returncode == 0, result.stderr
    meta = json.loads((data / "val" / "dataset.json").read_text())
    meta[field] = value
    (data / "val" / "dataset.json").write_text(json.dumps(meta))
    return (["scripts/evaluate.py", "--checkpoint", str(w["maze"]), "--split", "val", "--device", "cpu", "--data",
             str(data)], ("val/dataset.json", culprit), None)


# ---------------------------------------------------------------------------------------------

CASES = {
    # --- solve.py: a maze drawn as text ---------------------------------------------------------------
    "maze good": solve_maze(MAZE_TEXT.encode(), check=maze_solved(1)),
    "maze CRLF line endings": solve_maze(MAZE_TEXT.replace("\n", "\r\n").encode(), check=maze_solved(1)),
    "maze UTF-8 BOM": solve_maze(b"\xef\xbb\xbf" + MAZE_TEXT.encode(), check=maze_solved(1)),
    "maze two mazes": solve_maze((MAZE_TEXT + "\n" + MAZE_TEXT).encode(), check=maze_solved(2)),
    "maze trailing spaces": solve_maze("".join(r + "  \n" for r in MAZE_ROWS).encode(), "line 1", "9 characters"),
    "maze ragged line": solve_maze(MAZE_TEXT.replace("#S    #", "#S   #").encode(), "line 2", "6 characters"),
    "maze wrong size for the checkpoint": solve_maze(b"#####\n#S G#\n#####\n", "3 rows", "checkpoint's size"),
    "maze unknown character": solve_maze(MAZE_TEXT.replace("#   # #", "#  x# #").encode(), "line 4, column 4", "'x'"),
    "maze path marks in the question": solve_maze(MAZE_TEXT.replace("#   # #", "#  o# #").encode(), "'o'"),
    "maze tab": solve_maze(MAZE_TEXT.replace(" ", "\t").encode(), "'\\t'"),
    "maze no S": solve_maze(MAZE_TEXT.replace("S", " ").encode(), "0 'S' cells"),
    "maze no G": solve_maze(MAZE_TEXT.replace("G", " ").encode(), "0 'G' cells"),
    "maze two S": solve_maze(MAZE_TEXT.replace("#   # #", "#  S# #").encode(), "2 'S' cells"),
    "maze empty input": solve_maze(b"", "no maze found"),
    "maze blank lines only": solve_maze(b"\n \n\r\n", "no maze found"),
    "maze not UTF-8": solve_maze(b"\xff\xfe" + MAZE_TEXT.encode(), "byte 0", "not UTF-8"),
    "maze huge lines": solve_maze(("#" * 5000 + "\n").encode() * 3, "3 rows"),
    # --- solve.py / evaluate.py: test-time compute budgets ------------------------------------------
    "solve vote 8 check policy": solve_maze(MAZE_TEXT.encode(), flags=("--vote", "8", "--vote-policy", "check"),
                                            check=maze_solved(1)),
    "solve vote 0": solve_maze(MAZE_TEXT.encode(), "--vote 0", flags=("--vote", "0")),
    "solve vote negative": solve_maze(MAZE_TEXT.encode(), "--vote -3", flags=("--vote", "-3")),
    "solve vote above the bound": solve_maze(MAZE_TEXT.encode(), "--vote 100", "1..64", flags=("--vote", "100")),
    "solve vote a float": solve_maze(MAZE_TEXT.encode(), "--vote", "2.5", flags=("--vote", "2.5")),
    "solve vote a word": solve_maze(MAZE_TEXT.encode(), "--vote", "many", flags=("--vote", "many")),
    "solve vote policy unknown": solve_maze(MAZE_TEXT.encode(), "--vote-policy 'bogus'",
                                            flags=("--vote", "4", "--vote-policy", "bogus")),
    "solve vote seed negative": solve_maze(MAZE_TEXT.encode(), "--vote-seed", "-1",
                                           flags=("--vote", "4", "--vote-seed", "-1")),
    "solve vote seed a float": solve_maze(MAZE_TEXT.encode(), "--vote-seed", "1.5",
                                          flags=("--vote", "4", "--vote-seed", "1.5")),
    "solve vote seed huge": solve_maze(MAZE_TEXT.encode(), flags=("--vote", "4", "--vote-seed", "9" * 30),
                                       check=maze_solved(1)),
    "solve act-steps 0": solve_maze(MAZE_TEXT.encode(), "--act-steps 0", flags=("--act-steps", "0")),
    "solve act-steps above the bound": solve_maze(MAZE_TEXT.encode(), "--act-steps 100000000", "MAX_HALT_STEPS",
                                                  flags=("--act-steps", "100000000")),
    "solve act-steps a word": solve_maze(MAZE_TEXT.encode(), "--act-steps", "'x'", flags=("--act-steps", "x")),
    "evaluate act-steps huge": tool("evaluate", "--act-steps", "9" * 12, culprits=("--act-steps " + "9" * 12,)),
    "evaluate vote 65": tool("evaluate", "--vote", "65", culprits=("--vote 65",)),
    "evaluate vote seed negative": tool("evaluate", "--vote", "4", "--vote-seed", "-5", culprits=("--vote-seed",)),
    "evaluate vote policy unknown without voting": tool("evaluate", "--vote-policy", "x", culprits=("--vote-policy 'x'",)),
    "evaluate LSA vote with the check policy": tool("evaluate", "--vote", "2", "--vote-policy", "check", "--device",
                                                    "cpu", run_key="lsa", check=lambda r, t: None),
    # --- the validation split -----------------------------------------------------------------------
    "evaluate split val without val/": tool("evaluate", "--split", "val", culprits=("maze7/val", "--val-size")),
    "evaluate split val of a dataset with val/": lambda w, t: (
        ["scripts/evaluate.py", "--checkpoint", str(w["maze"]), "--split", "val", "--device", "cpu", "--data",
         str(run(["-m", "dataset.build_maze_dataset", "--output-dir", str(t / "mv"), "--no-progress", "--size", "7",
                  "--num-train", "20", "--num-test", "10", "--num-aug", "2", "--min-path", "4", "--loop-fraction", "0",
                  "--val-size", "3"]) and t / "mv")], None,
        lambda r, t: "eval/examples" in r.stdout or pytest.fail(r.stdout[-500:])),
    "evaluate val/ of another task": lambda w, t: val_tampered(w, t, "task", "lsa", "disagree on 'task'"),
    "evaluate split train": tool("evaluate", "--split", "train", run_key="lsa", culprits=("--split", "train")),
    "ttc_sweep split val without val/": sweep(*TINY_SWEEP, "--split", "val", culprits=("maze7/val",)),
    "config eval_split=val without val/": pretrain_check("data.eval_split=val", culprits=("data.eval_split=val",
                                                                                          "lsa4/val")),
    "config eval_split bogus": pretrain_check("data.eval_split=bogus", culprits=("data.eval_split", "'bogus'")),
    "maze val-size negative": maze_build("--size", "7", "--min-path", "4", "--val-size", "-1",
                                         culprits=("--val-size", "-1")),
    "maze val-size beyond the distinct mazes": maze_build("--size", "3", "--min-path", "1", "--loop-fraction", "0",
                                                          "--num-train", "1", "--num-test", "1", "--val-size", "1000",
                                                          culprits=("--size 3", "no new maze")),
    "maze val-size with --source-csv": maze_build("--size", "7", "--source-csv", lambda w, t: str(w["csv"]),
                                                  "--source-test-csv", lambda w, t: str(w["csv"]), "--val-size", "3",
                                                  culprits=("--val-size", "--source-csv")),
    "LSA val-size beyond the distinct instances": builder("build_lsa_dataset", "--n", "2", "--max-cost", "2",
                                                          "--num-train", "2", "--num-test", "2", "--val-size", "100000",
                                                          culprits=("--n 2 --max-cost 2", "no new acceptable")),
    "LSA val-size above MAX_INSTANCES": builder("build_lsa_dataset", "--val-size", str(1 << 30),
                                                culprits=("--val-size", str(1 << 30))),
    "arith val-size beyond the distinct pairs": builder("build_arith_dataset", "--max-digits", "1", "--num-train",
                                                        "2", "--num-test", "2", "--val-size", "100000",
                                                        culprits=("--val-size 100000", "distinct")),
    "LSA val-size beyond memory names --val-size": builder("build_lsa_dataset", "--n", "64", "--val-size",
                                                           str(1 << 24), culprits=("--val-size", "GiB")),
    "sudoku val-size above MAX_INSTANCES": builder("build_sudoku_dataset", "--workers", "1", "--val-size",
                                                   str(1 << 30), culprits=("--val-size", str(1 << 30))),
    # --- build_maze_dataset.py: generation ----------------------------------------------------------------
    "maze size 2": maze_build("--size", "2", culprits=("--size", "(got 2)")),
    "maze min-path longer than any path": maze_build("--size", "7", "--min-path", "400", culprits=("--min-path 400",)),
    "maze loop-fraction nan": maze_build("--size", "7", "--loop-fraction", "nan", culprits=("--loop-fraction", "nan")),
    "maze loop-fraction 0.9": maze_build("--size", "7", "--loop-fraction", "0.9", culprits=("--loop-fraction",)),
    "maze num-aug 8": maze_build("--size", "7", "--num-aug", "8", culprits=("--num-aug", "(got 8)")),
    "maze source-test-csv without source-csv": maze_build("--source-test-csv", lambda w, t: str(w["csv"]),
                                                          culprits=("--source-test-csv", "--source-csv")),
    # --- build_maze_dataset.py: Maze-Hard CSV import ---------------------------------------------------
    "csv good": maze_build("--size", "7", "--source-csv", lambda w, t: str(w["csv"]), "--source-test-csv",
                           lambda w, t: str(w["csv"]), check=lambda r, t: (t / "out" / "train").is_dir() or pytest.fail()),
    "csv wrong --size": maze_build("--size", "9", "--source-csv", lambda w, t: str(w["csv"]), "--source-test-csv",
                                   lambda w, t: str(w["csv"]), culprits=("good.csv", "7x7", "--size 7")),
    "csv not square": import_csv(csv_rows((MAZE_Q[:-1], MAZE_A[:-1])), "train.csv, line 2", "n*n"),
    "csv maze too small": import_csv(csv_rows(("####", "####")), "line 2", "2x2"),
    "csv no S": import_csv(csv_rows((MAZE_Q.replace("S", " "), MAZE_A.replace("S", " "))), "line 2", "'S'"),
    "csv two S": import_csv(csv_rows((MAZE_Q.replace("#   # #", "#  S# #"), MAZE_A.replace("#   # #", "#  S# #"))),
                            "line 2", "exactly one 'S'"),
    "csv path marks in the question": import_csv(csv_rows((MAZE_A, MAZE_A)), "line 2", "question may hold only"),
    "csv rows of two sizes": import_csv(csv_rows((MAZE_Q, MAZE_A), ("#" * 25, "#" * 25)), "line 3", "5x5"),
    "csv header wrong": import_csv(csv_rows((MAZE_Q, MAZE_A), header="foo,bar"), "line 1", "header lacks"),
    "csv empty file": import_csv(lambda w, t: text_file(t, b"", "train.csv"), "line 1", "file is empty"),
    "csv too few fields": import_csv(lambda w, t: text_file(t, b"source,question,answer,rating\nx,##\n", "train.csv"),
                                     "line 2", "2 fields"),
    "csv huge field": import_csv(lambda w, t: text_file(
        t, b"source,question,answer,rating\nx," + b"#" * (1 << 20) + b",#,0\n", "train.csv"), "line 2"),
    "csv a directory": import_csv(lambda w, t: str(t), "--source-csv", "is not a regular file"),
    "csv /dev/zero": import_csv(lambda w, t: "/dev/zero", "/dev/zero", "is not a regular file"),
    "csv missing": import_csv(lambda w, t: str(t / "nope.csv"), "nope.csv", "file not found"),
    "csv subsample beyond the rows": maze_build("--size", "7", "--source-csv", lambda w, t: str(w["csv"]),
                                                "--source-test-csv", lambda w, t: str(w["csv"]), "--subsample-size",
                                                "5", culprits=("--subsample-size 5", "only 1")),
    # --- ttc_sweep.py -------------------------------------------------------------------------------------
    "sweep 1,2 x 1,2": sweep("--act-steps", "1,2", "--votes", "1,2", "--vote-policies", "majority", check=swept(4)),
    "sweep act-steps repeated": sweep("--act-steps", "1,1", "--votes", "1", "--vote-policies", "majority",
                                      culprits=("--act-steps '1,1'", "repeated")),
    "sweep votes repeated": sweep("--act-steps", "1", "--votes", "1,1", "--vote-policies", "majority",
                                  culprits=("--votes '1,1'",)),
    "sweep policies repeated": sweep("--act-steps", "1", "--votes", "1", "--vote-policies", "majority,majority",
                                     culprits=("--vote-policies", "repeated")),
    "sweep act-steps empty item": sweep("--act-steps", "1,,2", "--votes", "1", "--vote-policies", "majority",
                                        culprits=("--act-steps '1,,2'", "empty")),
    "sweep votes trailing comma": sweep("--act-steps", "1", "--votes", "1,", "--vote-policies", "majority",
                                        culprits=("--votes '1,'", "empty")),
    "sweep policies empty item": sweep("--act-steps", "1", "--votes", "1", "--vote-policies", ",majority",
                                       culprits=("--vote-policies", "empty")),
    "sweep act-steps empty": sweep("--act-steps", "", "--votes", "1", "--vote-policies", "majority",
                                   culprits=("--act-steps ''",)),
    "sweep act-steps a float": sweep("--act-steps", "1.5", "--votes", "1", "--vote-policies", "majority",
                                     culprits=("--act-steps", "'1.5'")),
    "sweep act-steps above the bound": sweep("--act-steps", "2000", "--votes", "1", "--vote-policies", "majority",
                                             culprits=("--act-steps", "2000", "MAX_HALT_STEPS")),
    "sweep votes 0 names --votes": sweep("--act-steps", "1", "--votes", "0", "--vote-policies", "majority",
                                         culprits=("--votes '0'", "1..64")),
    "sweep policy unknown names --vote-policies": sweep("--act-steps", "1", "--votes", "1", "--vote-policies", "nope",
                                                       culprits=("--vote-policies 'nope'",)),
    "sweep policy capitalised": sweep("--act-steps", "1", "--votes", "1", "--vote-policies", "Majority",
                                      culprits=("--vote-policies 'Majority'",)),
    "sweep act-steps 01 and 1": sweep("--act-steps", "01,1", "--votes", "1", "--vote-policies", "majority",
                                      culprits=("--act-steps '01,1'", "repeated")),
    "sweep out empty string": sweep(*TINY_SWEEP, out=lambda w, t: "", culprits=("--out: is empty",)),
    "evaluate save-predictions into the run's checkpoints": tool(
        "evaluate", "--device", "cpu", "--save-predictions", lambda w, t: str(w["maze"] / "checkpoints"),
        culprits=("--save-predictions", "not an empty directory")),
    "sweep huge grid": sweep("--act-steps", ",".join(map(str, range(1, 41))), "--votes", ",".join(map(str, range(1, 65))),
                             "--vote-policies", "majority,confidence,check", culprits=("more than 256 cells",)),
    "sweep out a file": sweep(*TINY_SWEEP, out=lambda w, t: text_file(t, b"mine", "mine.txt"),
                              culprits=("--out", "mine.txt", "not an empty directory")),
    "sweep out a non-empty directory": sweep(*TINY_SWEEP, out=lambda w, t: str(Path(text_file(t, b"m", "keep")).parent),
                                             culprits=("--out", "not an empty directory")),
    "sweep out the run itself": sweep(*TINY_SWEEP, out=lambda w, t: str(w["maze"]), culprits=("--out", "maze")),
    "sweep out the run's checkpoints": sweep(*TINY_SWEEP, out=lambda w, t: str(w["maze"] / "checkpoints"),
                                             culprits=("--out", "checkpoints")),
    "sweep max-seconds nan": sweep(*TINY_SWEEP, "--max-seconds", "nan", culprits=("--max-seconds", "nan")),
    "sweep halting bogus": sweep(*TINY_SWEEP, "--halting", "bogus", culprits=("--halting 'bogus'",)),
    # --- the device group and train.num_threads -------------------------------------------------------------
    "device=tpu": pretrain_check("device=tpu", culprits=("device/tpu", "cpu, gpu")),
    "device=../x": pretrain_check("device=../x", culprits=("device=../x", "cpu, gpu")),
    "device=../arch/trm_mlp (a file of another group)": pretrain_check("device=../arch/trm_mlp",
                                                                       culprits=("device=../arch/trm_mlp", "cpu, gpu")),
    "device=lsa/cpu (a task's part, not an option)": pretrain_check("device=lsa/cpu",
                                                                    culprits=("device=lsa/cpu", "cpu, gpu")),
    "device=/etc/passwd": pretrain_check("device=/etc/passwd", culprits=("/etc/passwd", "cpu, gpu")),
    "device=null": pretrain_check("device=null", culprits=("device", "cpu, gpu")),
    "device sweep with a path": pretrain_check("device=cpu,../cfg_lsa", culprits=("../cfg_lsa", "cpu, gpu")),
    "device= (empty)": pretrain_check("device=", culprits=("device/",)),
    "num_threads 0": pretrain_check("train.num_threads=0", culprits=("train.num_threads", "(got 0)")),
    "num_threads -1": pretrain_check("train.num_threads=-1", culprits=("train.num_threads", "(got -1)")),
    "num_threads many": pretrain_check("train.num_threads=many", culprits=("train.num_threads", "'many'")),
    "num_threads 10**9": pretrain_check("train.num_threads=1000000000", culprits=("train.num_threads", "1000000000")),
    "num_threads 1.5": pretrain_check("train.num_threads=1.5", culprits=("train.num_threads", "1.5")),
    "num_threads true": pretrain_check("train.num_threads=true", culprits=("train.num_threads", "True")),
    # --- scaling.py -----------------------------------------------------------------------------------
    "scaling a sudoku config": scaling("--config-name", "cfg_sudoku", culprits=("cfg_sudoku", "no instance size")),
    "scaling sizes 0": scaling("--config-name", "cfg_lsa_cpu", "--sizes", "0", culprits=("--sizes", "n=0")),
    "scaling sizes repeated": scaling("--config-name", "cfg_lsa_cpu", "--sizes", "4,4", culprits=("--sizes 4,4",)),
    "scaling sizes huge": scaling("--config-name", "cfg_lsa_cpu", "--sizes", "100000000",
                                  culprits=("--sizes", "n=100000000")),
    "scaling sizes 5000 digits": scaling("--config-name", "cfg_lsa_cpu", "--sizes", "9" * 5000, culprits=("--sizes",)),
    "scaling sizes empty item": scaling("--config-name", "cfg_lsa_cpu", "--sizes", "4,,5",
                                        culprits=("--sizes 4,,5:", "integers")),
    "scaling sizes empty": scaling("--config-name", "cfg_lsa_cpu", "--sizes", "", culprits=("--sizes ''",)),
    "scaling sizes with an underscore": scaling("--config-name", "cfg_lsa_cpu", "--sizes", "4_0",
                                                culprits=("--sizes 4_0:",)),
    "scaling maze size 2": scaling("--config-name", "cfg_maze_cpu", "--sizes", "2", culprits=("size=2", "maze")),
    "scaling device=tpu": scaling("--config-name", "cfg_lsa_cpu", "--sizes", "4", "device=tpu",
                                  culprits=("device/tpu",)),
    "scaling config name a path": scaling("--config-name", "../etc/passwd", culprits=("--config-name", "not a path")),
    "scaling out the run itself": lambda w, t: (["scripts/scaling.py", "--out", str(w["lsa"]), "--config-name",
                                                 "cfg_lsa_cpu", "--sizes", "4", "--runs-dir", str(t / "runs")],
                                                ("--out", "run directory"), None),
    "scaling out inside a run": lambda w, t: (["scripts/scaling.py", "--out", str(w["lsa"] / "eval" / "sweep"),
                                               "--config-name", "cfg_lsa_cpu", "--sizes", "4", "--report-only"],
                                              ("--out", "run directory"), None),
    "report-only scaling.json a directory": lambda w, t: ((t / "s" / "scaling.json").mkdir(parents=True) or [
        "scripts/scaling.py", "--out", str(t / "s"), "--report-only"], ("scaling.json", "not a regular file"), None),
    "report-only scaling.json a link to /dev/zero": lambda w, t: ((t / "s").mkdir() or (
        t / "s" / "scaling.json").symlink_to("/dev/zero") or ["scripts/scaling.py", "--out", str(t / "s"),
                                                              "--report-only"], ("scaling.json", "not a regular file"),
                                                                  None),
    "report-only scaling.json nested deeply": report_error("scaling.json", "cannot read JSON", text="[" * 100000),
    "report-only on a good report": report(),
    "report-only scaling.json not JSON": report_error("scaling.json", text="{"),
    "report-only rows empty": report_error("scaling.json", "not a report", edit=lambda r, w: r.update(rows=[])),
    "report-only size a bool": report_error("scaling.json", edit=row(n=True)),
    "report-only size disagrees with the run": report_error("build_args.n is not 5", edit=row(n=5)),
    "report-only run missing": report_error("no run", edit=row(run="/nonexistent/x/y")),
    "report-only run the root": report_error("no run", edit=row(run="/")),
    "report-only run of another task": report_error("data.builder is 'maze'", edit=lambda r, w: r["rows"][0].update(
        run=str(w["maze"]))),
    "report-only size_arg a dunder": report_error("scaling.json", edit=lambda r, w: r.update(size_arg="__class__")),
    "report-only command a list": report_error("scaling.json", edit=lambda r, w: r.update(command=["rm", "-rf"])),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_r4(world, tmp_path, name):
    argv, culprits, check = CASES[name](world, tmp_path)
    watched = [world["lsa"], world["maze"], world["lsa_data"], world["maze_data"], world["csv"]]
    before = {p: digest(p) for p in watched}
    keep = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}  # files the case made beforehand
    result = run(argv)
    if culprits is None:
        assert result.returncode == 0, result.stderr[-2000:]
        if check is not None:
            check(result, tmp_path)
    else:
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-2000:]
        for culprit in culprits:
            assert culprit in lines[0], (culprit, lines[0])
        assert "Traceback" not in result.stderr
    for path, value in before.items():
        assert digest(path) == value, f"{path} was changed"
    for path, data in keep.items():
        if path.name != "scaling.json":  # --report-only rewrites its own report
            assert path.read_bytes() == data, f"{path} was changed"


def test_the_table_has_enough_rows():
    assert len(CASES) >= 80
