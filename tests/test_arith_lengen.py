"""Length generalisation of addition (issue 21, item 3): cfg_arith_lengen trains on 1..8-digit
operands and tests on 9..16. The builder's splits (train and val/ in the training range, test/
in the test range, one layout wide enough for both), the configs, and the one-line refusals of
digit ranges that cannot be built."""

import numpy as np
import pydantic
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, assert_one_line_error, run_in_process
from core.errors import DatasetError
from dataset.build_arith_dataset import ArithBuildConfig, ArithLayout, build_arith_dataset, decode_example
from dataset.common import load_split

CONFIGS = ("cfg_arith_lengen", "cfg_arith_lengen_cpu")


def composed(name, overrides=()):
    from training.config import register_configs

    register_configs()  # Hydra's `base`, which the task configs extend
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        raw = OmegaConf.to_container(compose(name, overrides=list(overrides)), resolve=True)
    raw.pop("hydra", None)
    return raw


def digits(value, base=10):
    """Digit count of a non-negative int, written out (0 has one digit)."""
    return len(np.base_repr(value, base))


def problems(path, split):
    """Every example of a split as (a, b, answer) ints, and the split's layout and metadata."""
    meta, sets = load_split(path, split)
    layout = ArithLayout.from_metadata(meta)
    arrays = sets["all"]
    return [decode_example(x, y, layout) for x, y in zip(arrays.inputs, arrays.labels)], layout, meta


@pytest.fixture(scope="module")
def preset_data(tmp_path_factory):
    """The CPU preset's dataset, built from the composed config's own build_args."""
    args = composed("cfg_arith_lengen_cpu")["data"]["build_args"]
    out = tmp_path_factory.mktemp("lengen") / "data"
    return build_arith_dataset(ArithBuildConfig(**args, output_dir=out, progress=False)), args


# ---------------------------------------------------------------------------------------------
# The built splits


def test_preset_splits_hold_only_their_digit_ranges(preset_data):
    path, args = preset_data
    assert (args["min_digits"], args["max_digits"], args["test_min_digits"], args["test_max_digits"]) == (1, 8, 9, 16)
    split_problems = {split: problems(path, split) for split in ("train", "val", "test")}
    layouts = {split: found[1] for split, found in split_problems.items()}
    assert len(set(layouts.values())) == 1  # one layout for all splits, wide enough for 16 digits
    layout = layouts["test"]
    assert (layout.operand_width, layout.answer_width, layout.seq_len) == (16, 17, 16 + 1 + 16 + 1 + 17)
    counts = {}
    for split, (triples, _, meta) in split_problems.items():
        for a, b, answer in triples:
            assert answer == a + b
        counts[split] = {digits(x) for a, b, _ in triples for x in (a, b)}
        expected_range = (9, 16) if split == "test" else (1, 8)  # val/ follows train, not test
        assert meta.split_digit_range == list(expected_range), split
    assert counts["train"] == set(range(1, 9)) and counts["val"] == set(range(1, 9))
    assert counts["test"] == set(range(9, 17))
    sizes = {split: len(found[0]) for split, found in split_problems.items()}
    assert sizes["val"] == args["val_size"] and sizes["test"] == args["num_test"]
    assert sizes["train"] > args["num_train"]  # plus the operand-swapped copies


def test_val_shares_no_problem_with_train_or_test(preset_data):
    path, _ = preset_data
    pairs = {split: {(min(a, b), max(a, b)) for a, b, _ in problems(path, split)[0]} for split in ("train", "val", "test")}
    assert not pairs["val"] & pairs["train"] and not pairs["val"] & pairs["test"] and not pairs["train"] & pairs["test"]


def test_val_follows_train_when_the_ranges_overlap(tmp_path):
    """Test 2..4 overlaps train 1..3: test problems may have 1-digit operands beside a longer one,
    but val/ never has an operand longer than the training range allows."""
    out = build_arith_dataset(ArithBuildConfig(output_dir=tmp_path / "d", base=10, min_digits=1, max_digits=3,
                                               test_min_digits=2, test_max_digits=4, num_train=300, num_test=100,
                                               val_size=100, progress=False))
    val, _, val_meta = problems(out, "val")
    test, _, test_meta = problems(out, "test")
    assert {digits(x) for a, b, _ in val for x in (a, b)} == {1, 2, 3}
    assert {digits(x) for a, b, _ in test for x in (a, b)} == {2, 3, 4}
    assert (val_meta.split_digit_range, test_meta.split_digit_range) == ([1, 3], [2, 4])


def test_val_left_in_the_training_range_is_checked_at_build(tmp_path):
    """Base 2, train 1 digit (3 pairs), test 1..2 digits: the arguments allow it (1 train + 2 val
    <= 3; 8 in all <= 10 pairs), but whether 2 one-digit pairs are left for val/ depends on what
    test/ drew. Over a few seeds both happen; a refusal names --val-size and writes nothing."""
    outcomes = set()
    for seed in range(20):
        out = tmp_path / f"s{seed}"
        cfg = ArithBuildConfig(output_dir=out, base=2, min_digits=1, max_digits=1, test_min_digits=1,
                               test_max_digits=2, num_train=1, num_test=5, val_size=2, num_aug=0, seed=seed,
                               progress=False)
        try:
            build_arith_dataset(cfg)
        except DatasetError as exc:
            assert str(exc).startswith("--val-size 2: only ") and "training range" in str(exc) and "\n" not in str(exc)
            assert not out.exists()
            outcomes.add("refused")
        else:
            assert {digits(x, 2) for a, b, _ in problems(out, "val")[0] for x in (a, b)} == {1}
            outcomes.add("built")
    assert outcomes == {"refused", "built"}


# ---------------------------------------------------------------------------------------------
# The configs


@pytest.mark.parametrize("name", CONFIGS)
def test_config_composes_and_validates(name, tmp_path):
    from evaluators.arith import facts_from_build_args
    from training.config import validate_config

    raw = composed(name)
    cfg = validate_config(raw)
    assert cfg.data.builder == "arith" and cfg.data.eval_split == "val" and cfg.evaluators == [{"name": "arith"}]
    build = ArithBuildConfig.model_validate({**cfg.data.build_args, "output_dir": tmp_path / "unused"})
    assert (build.op, build.train_range(), build.test_range()) == ("add", (1, 8), (9, 16)) and build.val_size > 0
    assert ArithLayout.model_validate(facts_from_build_args(cfg.data.build_args)["layout"]).seq_len == 51
    assert cfg.train.device == ("cpu" if name.endswith("_cpu") else "auto")


def test_device_cpu_is_the_preset():
    preset = composed("cfg_arith_lengen_cpu")
    assert composed("cfg_arith_lengen", ["device=cpu"]) == preset
    full = composed("cfg_arith_lengen")
    assert preset["data"]["path"] != full["data"]["path"]
    assert preset["data"]["build_args"]["num_train"] < full["data"]["build_args"]["num_train"]


def check(name, *overrides):
    return run_in_process("pretrain.py", "--config-name", name, "--check", *overrides)


@pytest.mark.parametrize("name", CONFIGS)
def test_pretrain_check_accepts_the_config(name, tmp_path):
    result = check(name, f"data.path={tmp_path / 'data'}", f"logging.runs_dir={tmp_path / 'runs'}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"{tmp_path / 'runs'}/{composed(name)['logging']['project']}/<generated name>"
    assert not (tmp_path / "data").exists()  # --check builds nothing


def test_pretrain_check_accepts_the_built_preset_data(preset_data, tmp_path):
    """With the dataset there, --check also runs the checks against the data (batch, evaluators)."""
    path, _ = preset_data
    result = check("cfg_arith_lengen_cpu", f"data.path={path}", f"logging.runs_dir={tmp_path / 'runs'}")
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# Bad ranges: one line, before anything is built

BAD_RANGES = {
    "test min above test max": (["test_min_digits=17"], ["--test-min-digits 17", "--test-max-digits 16"]),
    "test min alone above max_digits": (["~data.build_args.test_max_digits", "data.build_args.test_min_digits=9"],
                                        ["--test-min-digits 9", "--test-max-digits 8",
                                         "--test-max-digits defaults to --max-digits 8"]),
    "train min above train max": (["min_digits=9"], ["--min-digits 9", "--max-digits 8"]),
    "test max wider than a field": (["test_max_digits=257"], ["test", "max", "256", "257"]),
    "val larger than the training range": (["max_digits=1", "num_train=40"],
                                           ["--val-size", "training range (1..1 digits)", "only 55 distinct pairs"]),
    "test larger than the test range": (["base=2", "max_digits=2", "test_min_digits=3", "test_max_digits=3", "num_train=5"],
                                        ["--num-test 500", "only 10 distinct pairs", "3..3-digit", "base 2"]),
}


def overrides_of(changes):
    return [c if c.startswith(("~", "data.")) else f"data.build_args.{c}" for c in changes]


@pytest.mark.parametrize("case", sorted(BAD_RANGES))
def test_bad_range_is_one_line_from_pretrain_check(case, tmp_path):
    changes, culprits = BAD_RANGES[case]
    result = check("cfg_arith_lengen_cpu", f"data.path={tmp_path / 'data'}", f"logging.runs_dir={tmp_path / 'runs'}",
                   *overrides_of(changes))
    assert_one_line_error(result, "data.build_args", *culprits)
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", sorted(BAD_RANGES))
def test_bad_range_is_one_line_from_the_builder_cli(case, tmp_path):
    changes, culprits = BAD_RANGES[case]
    args = dict(composed("cfg_arith_lengen_cpu")["data"]["build_args"])
    for change in changes:
        key, _, value = change.rpartition(".")[2].partition("=")
        if change.startswith("~"):
            args.pop(key)
        else:
            args[key] = int(value) if value.isdigit() else value
    flags = [item for key, value in args.items() for item in (f"--{key.replace('_', '-')}", str(value))]
    out = tmp_path / "out"
    result = run_in_process("-m", "dataset.build_arith_dataset", "--output-dir", str(out), "--no-progress", *flags)
    assert_one_line_error(result, *culprits)
    assert not out.exists()


def test_bad_range_is_refused_by_the_config_class():
    with pytest.raises(pydantic.ValidationError, match="--test-min-digits 9 is larger than --test-max-digits 4"):
        ArithBuildConfig(output_dir="unused", max_digits=4, test_min_digits=9)
