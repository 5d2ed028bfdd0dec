import json
import shutil

import numpy as np
import pytest
import torch

from core.errors import DatasetError
from dataset.common import DatasetMetadata, SplitArrays, build_indices, write_split
from dataset.loader import IGNORE_LABEL_ID, DeviceArrays, PuzzleDataset, TrainSampler, eval_batches


def write_reference_style(root, seq_len=81, vocab=11, groups=(3, 2), examples_per_puzzle=1, dtype=np.uint8):
    """A dataset laid out as the reference's Sudoku builder writes it: uint8 tokens, int32
    indices, identifier 0 for every puzzle, ignore_label_id 0, no extra metadata fields."""
    for split, per_group in (("train", groups), ("test", (1,) * 2)):
        puzzle_indices, group_indices = build_indices(list(per_group), examples_per_puzzle)
        puzzles = int(group_indices[-1])
        examples = puzzles * examples_per_puzzle
        rng = np.random.default_rng(len(split))
        arrays = SplitArrays(
            inputs=rng.integers(1, vocab, size=(examples, seq_len)).astype(dtype),
            labels=rng.integers(1, vocab, size=(examples, seq_len)).astype(dtype),
            puzzle_identifiers=np.zeros(puzzles, dtype=np.int32),
            puzzle_indices=puzzle_indices,
            group_indices=group_indices,
        )
        meta = DatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab, seq_len=seq_len,
                               num_puzzle_identifiers=1, total_groups=len(per_group),
                               mean_puzzle_examples=float(examples_per_puzzle), total_puzzles=puzzles, sets=["all"])
        write_split(root / split, meta, {"all": arrays})
    (root / "identifiers.json").write_text('["<blank>"]')
    return root


def test_reads_reference_format(tmp_path):
    root = write_reference_style(tmp_path / "ref")
    data = PuzzleDataset.load(root)
    assert data.train.num_examples == 5 and data.train.num_groups == 2
    assert data.meta.seq_len == 81


def test_labels_ignore_id_maps_to_minus_100(tmp_path):
    root = write_reference_style(tmp_path / "ref")
    labels = np.load(root / "train" / "all__labels.npy")
    labels[0, :5] = 0
    np.save(root / "train" / "all__labels.npy", labels)
    data = PuzzleDataset.load(root)
    arrays = DeviceArrays(data.train, data.train_meta, torch.device("cpu"), resident=True)
    batch = arrays.gather(np.array([0, 1]))
    assert batch["labels"].dtype == torch.int64
    assert torch.all(batch["labels"][0, :5] == IGNORE_LABEL_ID) and torch.all(batch["labels"][1] > 0)


def _corrupt(root, split, name, fn):
    path = root / split / name
    if name.endswith(".npy"):
        np.save(path, fn(np.load(path)))
    elif name.endswith(".json"):
        path.write_text(json.dumps(fn(json.loads(path.read_text()))))


CORRUPTIONS = {
    "missing inputs": (lambda r: (r / "train" / "all__inputs.npy").unlink(), "all__inputs.npy"),
    "missing dataset.json": (lambda r: (r / "test" / "dataset.json").unlink(), "dataset.json"),
    "bad json": (lambda r: (r / "train" / "dataset.json").write_text("{nope"), "not valid JSON"),
    "missing field": (lambda r: _corrupt(r, "train", "dataset.json", lambda m: {k: v for k, v in m.items() if k != "seq_len"}), "seq_len"),
    "wrong seq_len": (lambda r: _corrupt(r, "train", "all__inputs.npy", lambda a: a[:, :10]), "all__inputs.npy"),
    "float dtype": (lambda r: _corrupt(r, "train", "all__labels.npy", lambda a: a.astype(np.float32)), "all__labels.npy"),
    "token >= vocab": (lambda r: _corrupt(r, "train", "all__inputs.npy", lambda a: np.where(a == a.max(), 200, a).astype(np.uint8)), "vocab_size"),
    "label >= vocab": (lambda r: _corrupt(r, "test", "all__labels.npy", lambda a: np.full_like(a, 50)), "all__labels.npy"),
    "non-monotone puzzles": (lambda r: _corrupt(r, "train", "all__puzzle_indices.npy", lambda a: a[[0, 2, 1, 3, 4, 5]]), "increasing"),
    "group end wrong": (lambda r: _corrupt(r, "train", "all__group_indices.npy", lambda a: np.array([0, 3, 4], dtype=np.int32)), "all__group_indices.npy"),
    "identifier out of range": (lambda r: _corrupt(r, "train", "all__puzzle_identifiers.npy", lambda a: a + 5), "num_puzzle_identifiers"),
    "rows differ": (lambda r: _corrupt(r, "train", "all__labels.npy", lambda a: a[:-1]), "all__labels.npy"),
    "train/test disagree": (lambda r: _corrupt(r, "test", "dataset.json", lambda m: {**m, "vocab_size": 12}), "disagree on 'vocab_size'"),
    "total_groups wrong": (lambda r: _corrupt(r, "train", "dataset.json", lambda m: {**m, "total_groups": 7}), "total_groups"),
    "truncated npy": (lambda r: (r / "train" / "all__inputs.npy").write_bytes((r / "train" / "all__inputs.npy").read_bytes()[:100]), "cannot read"),
    "empty": (lambda r: [_corrupt(r, "test", f"all__{f}.npy", fn) for f, fn in (
        ("inputs", lambda a: a[:0]), ("labels", lambda a: a[:0]), ("puzzle_identifiers", lambda a: a[:0]),
        ("puzzle_indices", lambda a: a[:1]), ("group_indices", lambda a: a[:1]))], "empty"),
    "no directory": (lambda r: shutil.rmtree(r), "not found"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_bad_dataset_is_a_one_line_error_naming_the_culprit(tmp_path, name):
    root = write_reference_style(tmp_path / "ref")
    corrupt, culprit = CORRUPTIONS[name]
    corrupt(root)
    with pytest.raises(DatasetError) as info:
        PuzzleDataset.load(root)
    message = str(info.value)
    assert culprit in message and "\n" not in message


def test_sampler_visits_each_group_once_per_epoch(lsa_small):
    data = PuzzleDataset.load(lsa_small)
    sampler = TrainSampler(data.train, global_batch_size=8, seed=1)
    order = sampler.epoch_order(0)
    groups = np.searchsorted(data.train.group_indices, order, side="right") - 1
    assert sorted(groups.tolist()) == list(range(40))
    assert not np.array_equal(sampler.epoch_order(1), order)  # a new draw each epoch
    assert np.array_equal(TrainSampler(data.train, 8, seed=1).epoch_order(0), order)  # seeded
    assert not np.array_equal(TrainSampler(data.train, 8, seed=2).epoch_order(0), order)


def test_sampler_draws_every_augmentation_over_epochs(lsa_small):
    data = PuzzleDataset.load(lsa_small)
    sampler = TrainSampler(data.train, 8, seed=0)
    seen = np.concatenate([sampler.epoch_order(e) for e in range(60)])
    assert len(np.unique(seen)) == data.train.num_examples


def test_sampler_multi_example_puzzles(tmp_path):
    root = write_reference_style(tmp_path / "ref", groups=(2, 3, 1), examples_per_puzzle=3)
    data = PuzzleDataset.load(root)
    order = TrainSampler(data.train, 4, seed=0).epoch_order(0)
    assert len(order) == 3 * 3  # 3 groups, one puzzle of 3 examples each
    for chunk in order.reshape(3, 3):
        assert chunk[0] % 3 == 0 and np.array_equal(chunk, chunk[0] + np.arange(3))


def test_sampler_resumes_exactly(lsa_small):
    data = PuzzleDataset.load(lsa_small)
    a = TrainSampler(data.train, 24, seed=3)
    first = [a.next_indices() for _ in range(5)]
    state = a.state_dict()
    rest = [a.next_indices() for _ in range(20)]
    b = TrainSampler(data.train, 24, seed=0)
    b.load_state_dict(state)
    assert all(np.array_equal(x, y) for x, y in zip(rest, [b.next_indices() for _ in range(20)]))
    assert all(len(x) == 24 for x in first + rest)  # batches span epoch boundaries (160/24)


def test_sampler_batch_larger_than_epoch(lsa_small):
    data = PuzzleDataset.load(lsa_small)
    sampler = TrainSampler(data.train, 100, seed=0)  # 40 groups per epoch
    batch = sampler.next_indices()
    assert batch.shape == (100,) and sampler.epoch == 2


def test_sampler_shards_ranks(lsa_small):
    data = PuzzleDataset.load(lsa_small)
    full = TrainSampler(data.train, 16, seed=0).next_indices()
    parts = [TrainSampler(data.train, 16, seed=0, rank=r, world_size=2).next_indices() for r in range(2)]
    assert np.array_equal(np.concatenate(parts), full)


def test_eval_batches_cover_every_example_once_with_padding(lsa_small):
    data = PuzzleDataset.load(lsa_small)
    arrays = DeviceArrays(data.test, data.test_meta, torch.device("cpu"), resident=True)
    seen, shapes = [], set()
    for batch, valid in eval_batches(arrays, data.test.num_examples, 4):
        shapes.add(tuple(batch["inputs"].shape))
        seen.append(batch["inputs"][:valid])
        assert torch.all(batch["labels"][valid:] == IGNORE_LABEL_ID) and torch.all(batch["inputs"][valid:] == 0)
    assert shapes == {(4, 16)}
    assert torch.equal(torch.cat(seen), torch.from_numpy(data.test.inputs.astype(np.int32)))


def test_sampler_rejects_indivisible_world_size(lsa_small):
    data = PuzzleDataset.load(lsa_small)
    with pytest.raises(ValueError, match="divisible"):
        TrainSampler(data.train, 10, seed=0, world_size=3)
