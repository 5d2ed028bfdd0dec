import json

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from conftest import assert_one_line_error, build_lsa, dir_digest, run_in_process, run_module
from dataset.build_lsa_dataset import LABEL_ASSIGNED, LABEL_UNASSIGNED, augment, has_unique_optimum, solve
from dataset.common import load_split


def _costs_and_assignment(split, n):
    costs = split.inputs.reshape(-1, n, n).astype(np.int64)
    assigned = split.labels.reshape(-1, n, n) == LABEL_ASSIGNED
    return costs, assigned


def test_labels_are_optimal_permutations(lsa_small):
    for split_name in ("train", "test"):
        meta, sets = load_split(lsa_small, split_name)
        costs, assigned = _costs_and_assignment(sets["all"], 4)
        assert set(np.unique(sets["all"].labels)) == {LABEL_UNASSIGNED, LABEL_ASSIGNED}
        assert np.all(assigned.sum(1) == 1) and np.all(assigned.sum(2) == 1)
        for c, a in zip(costs, assigned):
            rows, cols = linear_sum_assignment(c)
            assert (c * a).sum() == c[rows, cols].sum()
        assert costs.min() >= 1 and costs.max() <= 9


def test_metadata_matches_reference_contract(lsa_small):
    meta, sets = load_split(lsa_small, "train")
    assert (meta.vocab_size, meta.seq_len, meta.pad_id, meta.ignore_label_id) == (11, 16, 0, 0)
    assert meta.total_groups == 40 and meta.total_puzzles == 160 and meta.sets == ["all"]
    s = sets["all"]
    assert s.inputs.dtype == np.uint8 and s.inputs.shape == (160, 16)
    assert np.array_equal(s.group_indices, np.arange(0, 161, 4))
    assert np.array_equal(s.puzzle_indices, np.arange(161))
    test_meta, test_sets = load_split(lsa_small, "test")
    assert test_meta.total_groups == 10 and test_sets["all"].num_examples == 10
    assert json.loads((lsa_small / "identifiers.json").read_text()) == ["<blank>"]


def test_group_members_are_permutations_of_the_original(lsa_small):
    _, sets = load_split(lsa_small, "train")
    s = sets["all"]
    for g in range(5):
        members = s.inputs[s.group_indices[g] : s.group_indices[g + 1]].reshape(-1, 4, 4).astype(np.int64)
        original = members[0]
        best = solve(original)
        optimum = original[np.arange(4), best].sum()
        for m in members[1:]:
            # Same multiset of rows up to column order (or of columns, if transposed).
            rows = sorted(tuple(sorted(r)) for r in original)
            assert sorted(tuple(sorted(r)) for r in m) == rows or sorted(tuple(sorted(c)) for c in m.T) == rows
            assert m[np.arange(4), solve(m)].sum() == optimum


def test_augment_maps_optimal_assignment_to_optimal():
    rng = np.random.default_rng(3)
    costs = rng.integers(1, 101, size=(50, 6, 6))
    cols = np.stack([solve(c) for c in costs])
    aug_costs, aug_cols = augment(rng, costs, cols, num_aug=4, transpose=True)
    for i in range(50):
        opt = costs[i][np.arange(6), cols[i]].sum()
        for a in range(4):
            assert np.array_equal(np.sort(aug_cols[i, a]), np.arange(6))
            assert aug_costs[i, a][np.arange(6), aug_cols[i, a]].sum() == opt




def test_same_arguments_give_identical_bytes(tmp_path):
    a = build_lsa(tmp_path / "a", seed=7)
    b = build_lsa(tmp_path / "b", seed=7)
    c = build_lsa(tmp_path / "c", seed=8)
    assert dir_digest(a) == dir_digest(b)
    assert dir_digest(a) != dir_digest(c)


def test_test_split_does_not_depend_on_train_size(tmp_path):
    a = build_lsa(tmp_path / "a", num_train=20)
    b = build_lsa(tmp_path / "b", num_train=30)
    assert np.array_equal(load_split(a, "test")[1]["all"].inputs, load_split(b, "test")[1]["all"].inputs)


def test_unique_optimum_filter(tmp_path):
    out = build_lsa(tmp_path / "u", n=3, max_cost=4, num_train=30, num_test=10, unique_optimum=True)
    for split in ("train", "test"):
        _, sets = load_split(out, split)
        costs, assigned = _costs_and_assignment(sets["all"], 3)
        for c, a in zip(costs, assigned):
            assert has_unique_optimum(c, np.argmax(a, axis=1))


def test_has_unique_optimum_matches_brute_force():
    import itertools

    perms = np.array(list(itertools.permutations(range(4))))
    rng = np.random.default_rng(0)
    for _ in range(300):
        c = rng.integers(1, 6, size=(4, 4))
        totals = c[np.arange(4), perms].sum(1)
        assert has_unique_optimum(c, solve(c)) == ((totals == totals.min()).sum() == 1)


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["--n", "1"], "--n"),
        (["--max-cost", "0"], "--max-cost"),
        (["--num-train", "-3"], "--num-train"),
        (["--num-test", "-1"], "--num-test"),
        (["--num-aug", "-2"], "--num-aug"),
        (["--n", "abc"], "--n"),
        (["--bogus", "1"], "--bogus"),
    ],
)
def test_bad_arguments_fail_with_one_line(tmp_path, args, culprit):
    out = tmp_path / "out"
    result = run_in_process("-m", "dataset.build_lsa_dataset", "--output-dir", str(out), "--no-progress", *args)
    assert_one_line_error(result, culprit)
    assert not out.exists()


@pytest.mark.slow
def test_non_empty_output_dir_needs_overwrite(tmp_path):
    out = build_lsa(tmp_path / "d", seed=1)
    before = dir_digest(out)
    result = run_module("-m", "dataset.build_lsa_dataset", "--output-dir", str(out), "--n", "3", "--num-train", "5",
                        "--num-test", "2", "--no-progress")
    assert_one_line_error(result, "--overwrite")
    assert dir_digest(out) == before  # nothing overwritten
    result = run_module("-m", "dataset.build_lsa_dataset", "--output-dir", str(out), "--n", "3", "--num-train", "5",
                        "--num-test", "2", "--no-progress", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert load_split(out, "train")[0].seq_len == 9
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_unique_optimum_train_keeps_test_ties(tmp_path):
    out = build_lsa(tmp_path / "ut", n=3, max_cost=3, num_train=20, num_test=40, unique_optimum_train=True)
    train_meta, train = load_split(out, "train")
    test_meta, test = load_split(out, "test")
    assert train_meta.originals_with_tied_optima == 0 and test_meta.originals_with_tied_optima > 0
    costs, assigned = _costs_and_assignment(train["all"], 3)
    assert all(has_unique_optimum(c, np.argmax(a, axis=1)) for c, a in zip(costs, assigned))


def test_impossible_unique_request_is_a_clear_error(tmp_path):
    from core.errors import DatasetError

    with pytest.raises(DatasetError, match="--max-cost 1"):
        build_lsa(tmp_path / "x", n=3, max_cost=1, num_train=2, num_test=1, unique_optimum=True)
    assert not (tmp_path / "x").exists()


def test_tied_instances_get_the_lexicographically_smallest_optimum():
    import itertools

    from dataset.build_lsa_dataset import label_columns

    perms = np.array(list(itertools.permutations(range(4))))  # lexicographic order
    rng = np.random.default_rng(5)
    tied_seen = 0
    for _ in range(300):
        c = rng.integers(1, 5, size=(4, 4))
        totals = c[np.arange(4), perms].sum(1)
        cols, unique = label_columns(c)
        assert unique == ((totals == totals.min()).sum() == 1)
        assert np.array_equal(cols, perms[np.argmax(totals == totals.min())])
        tied_seen += not unique
    assert tied_seen > 50


def test_augmented_copies_of_tied_instances_are_labelled_canonically(tmp_path):
    from dataset.build_lsa_dataset import label_columns

    out = build_lsa(tmp_path / "t", n=3, max_cost=3, num_train=30, num_test=5, num_aug=4)
    _, sets = load_split(out, "train")
    costs, assigned = _costs_and_assignment(sets["all"], 3)
    for c, a in zip(costs, assigned):
        assert np.array_equal(np.argmax(a, axis=1), label_columns(c)[0])


def test_a_dataset_path_through_a_broken_link_names_the_link(tmp_path):
    """--data / data.path at a dangling link or a link loop: "not found" and which link leads nowhere;
    a plain missing folder says only "not found"."""
    from core.errors import DatasetError

    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for path, said in ((tmp_path / "dangling", "is a dangling symbolic link, to"),
                       (tmp_path / "loop" / "lsa", "loop is a symbolic link loop, to"),
                       (tmp_path / "missing", None)):
        with pytest.raises(DatasetError) as caught:
            load_split(path, "test")
        message = str(caught.value)
        assert message.startswith(f"{path}: dataset directory not found") and "\n" not in message
        assert (said in message) if said else message.endswith("not found"), message
