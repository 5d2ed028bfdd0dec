"""A trained model ready to answer new instances, from a checkpoint or an exported directory.

    from training.inference import load_model
    model = load_model("exports/lsa-cpu")        # an export (scripts/export.py), or a run / checkpoint dir
    answers = model.solve(tokens)                 # (N, seq_len) int tokens -> {"preds", "logits", "steps", "q_halt"}
    model = load_model(path, act_steps=64, votes=8, vote_policy="check")   # a test-time budget (training/voting.py)

An export is `model.safetensors` (the weights: EMA by default; safetensors holds tensors only,
so loading runs no pickle) and `config.json` (the model config, the dataset facts the weights
depend on, the task's encoding facts and the answer policy). Nothing read from either file
chooses code: `arch.name` picks a class from the registry in models/__init__.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from core.errors import InputError
from dataset.common import MARKER, MARKER_FIELD, MAX_TABLE_ROWS, _umask
from dataset.loader import IGNORE_LABEL_ID
from dataset.replace_guard import EXPORT, EXPORT_CONFIG, EXPORT_FORMAT, EXPORT_WEIGHTS, check_target, write_atomically
from evaluators.tasks import COMMON_FACT_FIELDS, TASKS, get_task
from models import build_model, validate_arch
from training.engine.checkpoint import (
    CheckpointError, check_tensors, load_config, load_meta, load_weights, resolve_checkpoint,
)
from training.engine.evaluation import EVAL_HALTING

EXPORT_VERSION = 1
WEIGHTS_FILE, CONFIG_FILE = EXPORT_WEIGHTS, EXPORT_CONFIG
SHAPE_FIELDS = ("vocab_size", "seq_len", "num_puzzle_identifiers")


def task_fields(task: Any) -> tuple[str, ...]:
    """dataset.json fields a model's tokens are read and written by (beyond its shape facts): those
    of every task, and the task's own (evaluators/tasks.py)."""
    return COMMON_FACT_FIELDS + (get_task(task).fact_fields if isinstance(task, str) and task in TASKS else ())


def task_facts(metadata: Any) -> dict[str, Any]:
    """The task's encoding facts from a dataset's metadata (a DatasetMetadata or a dict)."""
    raw = metadata if isinstance(metadata, dict) else metadata.model_dump()
    return {k: raw[k] for k in task_fields(raw.get("task")) if raw.get(k) is not None}


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_task_facts(facts: dict[str, Any], where: Path | str, prefix: str = "") -> None:
    """The encoding facts a model or a dataset declares must agree with each other and with its
    shape (the common ones here, the task's own through its `Task.check_facts`), or answers are
    read from the wrong cells. `where` names the file, `prefix` the object holding the facts in it
    ("data." in an export's config.json)."""
    for field in SHAPE_FIELDS:
        value = facts.get(field)
        if not _integer(value) or not 1 <= value <= MAX_TABLE_ROWS:
            raise InputError(f"{where}: {prefix}{field}={value!r}: expected an integer in 1..{MAX_TABLE_ROWS}")
    blank = facts.get("blank_identifier_id", 0)
    if not _integer(blank) or not 0 <= blank < facts["num_puzzle_identifiers"]:
        raise InputError(f"{where}: {prefix}blank_identifier_id={blank!r} is not a puzzle identifier "
                         f"(num_puzzle_identifiers={facts['num_puzzle_identifiers']})")
    task = facts.get("task")
    if task is not None and not isinstance(task, str):
        raise InputError(f"{where}: {prefix}task={task!r}: expected a task name")
    if task in TASKS:  # its own facts; a task this project does not know has nothing more to check
        get_task(task).check_facts(facts, where, prefix)


def facts_from_config(cfg: Any) -> dict[str, Any]:
    """For checkpoints that predate recorded task facts: the run's dataset.json when it is still
    there, else what its builder arguments imply."""
    path = Path(cfg.data.path) / "train" / "dataset.json"
    if path.is_file():
        return task_facts(json.loads(path.read_text()))
    builder, args = cfg.data.builder, dict(cfg.data.build_args)
    if builder in TASKS:
        return {"task": builder, **get_task(builder).facts_from_build_args(args)}
    return {"task": builder} if builder else {}


def _pick(mask: torch.Tensor, new: torch.Tensor, old: Optional[torch.Tensor]) -> torch.Tensor:
    if old is None:
        return new
    return torch.where(mask.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)


class ReadyModel(nn.Module):
    """A model in eval mode with the ACT loop around it: tokens in, answers and steps out.

    `halting`: "max_steps" keeps the answer after halt_max_steps steps, "q_head" the one of the
    step where the Q head first says halt (training's `train.eval_halting`, by default).
    `votes`, `vote_policy`, `vote_seed`: `solve`'s test-time voting (training/voting.py); 1 = the
    plain answer. The ACT steps are the model's `cfg.halt_max_steps` (load_model's `act_steps`)."""

    def __init__(self, model: nn.Module, facts: dict[str, Any], halting: str, source: str, weights: str,
                 votes: int = 1, vote_policy: str = "majority", vote_seed: int = 0):
        from training.voting import check_votes

        super().__init__()
        if halting not in EVAL_HALTING:
            raise InputError(f"halting={halting!r}; expected one of {', '.join(EVAL_HALTING)}")
        self.votes, self.vote_policy = check_votes(votes, vote_policy)
        if not isinstance(vote_seed, int) or isinstance(vote_seed, bool) or vote_seed < 0:
            raise InputError(f"--vote-seed {vote_seed!r}: expected an integer >= 0")
        self.vote_seed = vote_seed
        self.last_vote: Optional[dict[str, Any]] = None  # what solve's last vote did (votes > 1)
        self.model = model.eval()
        # vocab_size, seq_len, num_puzzle_identifiers, task, pad_id, ..., the task's own facts
        self.facts = {k: facts[k] for k in SHAPE_FIELDS + task_fields(facts.get("task")) if k in facts}
        self.halting = halting
        self.source = source  # where it was loaded from
        self.weights = weights  # "ema" or "model"
        self.eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor, puzzle_identifiers: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """inputs (B, L) tokens -> preds (B, L), logits (B, L, V), steps (B,) ACT steps used, q_halt (B,)
        the Q head's halt logit at the answer's step."""
        model, max_steps = self.model, self.model.cfg.halt_max_steps
        inputs = inputs.to(self.device, torch.int32)
        if puzzle_identifiers is None:
            puzzle_identifiers = torch.full_like(inputs[:, 0], self.facts.get("blank_identifier_id", 0))
        batch = {"inputs": inputs, "labels": torch.full_like(inputs, IGNORE_LABEL_ID),
                 "puzzle_identifiers": puzzle_identifiers.to(self.device, torch.int32)}
        carry = model.initial_carry(batch)
        halted = torch.zeros_like(inputs[:, 0], dtype=torch.bool)
        steps = torch.full_like(inputs[:, 0], max_steps)
        kept = kept_q = None
        for step in range(1, max_steps + 1):
            carry, outputs = model(carry, batch)
            now = (model.halt_decision(outputs) | (step == max_steps)) & ~halted
            steps = torch.where(now, step, steps)
            halted = halted | now
            if self.halting == "q_head":
                kept = _pick(now, outputs["logits"], kept)
                kept_q = _pick(now, outputs["q_halt_logits"], kept_q)
                if bool(halted.all()):
                    break
        if self.halting != "q_head":
            kept, kept_q, steps = outputs["logits"], outputs["q_halt_logits"], torch.full_like(steps, max_steps)
        logits = kept.float()  # (B, L, V)
        return {"preds": logits.argmax(-1), "logits": logits, "steps": steps, "q_halt": kept_q.float()}

    @property
    def act_steps(self) -> int:
        return int(self.model.cfg.halt_max_steps)

    def checked_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """The inputs as a numpy array of token ids the model can read, or one InputError: shape
        (N >= 1, seq_len), integers, each in [0, vocab_size)."""
        tokens = np.asarray(tokens)
        seq_len, vocab = self.facts["seq_len"], self.facts["vocab_size"]
        if tokens.ndim != 2 or tokens.shape[1] != seq_len or tokens.shape[0] == 0:
            raise InputError(f"inputs: expected shape (N, {seq_len}) with N >= 1, got {tokens.shape}")
        if not np.issubdtype(tokens.dtype, np.integer):  # bool is not an integer dtype here
            raise InputError(f"inputs: expected integer token ids, got dtype {tokens.dtype}")
        outside = (tokens < 0) | (tokens >= vocab)
        if outside.any():
            row, col = np.argwhere(outside)[0]
            raise InputError(f"inputs: row {row}, position {col}: token {int(tokens[row, col])} is outside "
                             f"[0, {vocab}) (the model's vocab_size)")
        return tokens

    def answer(self, tokens: np.ndarray, batch_size: int = 256, puzzle_identifiers: Optional[np.ndarray] = None,
               keep_logits: bool = True) -> dict[str, np.ndarray]:
        """One answer per row, no voting: numpy (N, seq_len) tokens -> {"preds", "steps", "q_halt"}
        and, with `keep_logits`, "logits" (N, L, V)."""
        tokens = self.checked_tokens(tokens)
        parts = []
        for i in range(0, tokens.shape[0], batch_size):
            ids = None if puzzle_identifiers is None else torch.from_numpy(
                np.asarray(puzzle_identifiers[i:i + batch_size]).astype(np.int32))
            out = self(torch.from_numpy(tokens[i:i + batch_size].astype(np.int32)), ids)
            parts.append({k: v.cpu() for k, v in out.items() if keep_logits or k != "logits"})
        return {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}

    def solve(self, tokens: np.ndarray, batch_size: int = 256, votes: Optional[int] = None,
              vote_policy: Optional[str] = None) -> dict[str, np.ndarray]:
        """numpy (N, seq_len) tokens -> {"preds": (N, L), "logits": (N, L, V), "steps": (N,), "q_halt": (N,)}.

        With votes > 1 (here or the model's `votes`) the answer is voted over the task's
        symmetries (training/voting.py); "logits" is then the one-hot of the voted answer (the
        candidates' logits are in their own frames), "steps" the chosen candidate's, and
        `last_vote` records the choice ({"chosen_by", "agreement", "candidate", "summary"})."""
        from evaluators.tasks import get_task
        from training.voting import answer_candidates, candidate_symmetries, check_votes, summary, vote

        votes, policy = check_votes(self.votes if votes is None else votes,
                                    self.vote_policy if vote_policy is None else vote_policy)
        self.last_vote = None
        if votes == 1:
            return self.answer(tokens, batch_size)
        tokens = self.checked_tokens(tokens)
        task = get_task(self.facts.get("task"), where="the model's task")
        symmetries = candidate_symmetries(task, self.facts, votes, self.vote_seed)
        candidates = answer_candidates(lambda x: self.answer(x, batch_size, keep_logits=False), tokens, symmetries)
        choice, preds = vote(candidates, task, self.facts, tokens, policy)
        rows = np.arange(tokens.shape[0])
        self.last_vote = {"chosen_by": choice.chosen_by.tolist(), "agreement": choice.agreement.tolist(),
                          "candidate": choice.index.tolist(), "summary": summary(choice, candidates, policy, self.act_steps)}
        logits = np.eye(self.facts["vocab_size"], dtype=np.float32)[preds]
        return {"preds": preds, "logits": logits, "steps": candidates.steps[choice.index, rows],
                "q_halt": candidates.q_halt[choice.index, rows].astype(np.float32)}


# ---------------------------------------------------------------------------------------------
# Loading


def build_from_facts(arch_raw: dict[str, Any], facts: dict[str, Any], device: torch.device, where: Path,
                     act_steps: Optional[int] = None) -> nn.Module:
    """A model from the registry by `arch_raw["name"]`, shaped by the dataset facts (any device,
    "meta" included: compare_runs counts parameters that way); `where` names the source in errors.
    `act_steps`: the ACT steps at test time instead of the config's halt_max_steps."""
    from training.voting import with_act_steps

    try:
        arch = validate_arch(dict(arch_raw))
    except ValueError as exc:
        raise InputError(f"{where}: arch: {exc}") from exc
    if act_steps is not None:
        try:  # the config itself is valid: only the new step count can break a bound here
            arch = validate_arch(with_act_steps(arch.model_dump(), act_steps))
        except ValueError as exc:
            raise InputError(f"--act-steps {act_steps}: {exc}") from exc
    for field in SHAPE_FIELDS:
        if not _integer(facts.get(field)) or not 1 <= facts[field] <= MAX_TABLE_ROWS:
            raise InputError(f"{where}: data.{field} must be an integer in 1..{MAX_TABLE_ROWS}, got {facts.get(field)!r}")
    try:
        return build_model(arch, SimpleNamespace(**{f: facts[f] for f in SHAPE_FIELDS}), device)
    except InputError as exc:
        raise InputError(f"{f'--act-steps {act_steps}' if act_steps is not None else where}: {exc}") from exc


def load_checkpoint_model(path: Path | str, device: str | torch.device = "cpu", ema: bool = True,
                          halting: Optional[str] = None, act_steps: Optional[int] = None, **voting: Any) -> ReadyModel:
    """A run or checkpoint directory -> ReadyModel (EMA weights when present and `ema`);
    `act_steps` replaces the trained halt_max_steps, `voting` (votes, vote_policy, vote_seed) goes to ReadyModel."""
    from training.config import ConfigError, validate_config

    ckpt = resolve_checkpoint(path)
    try:
        cfg = validate_config(load_config(ckpt))
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt / 'config.json'}: {str(exc).removeprefix('config: ')}") from exc
    recorded = load_meta(ckpt).get("dataset", {})
    facts = {**facts_from_config(cfg), **recorded} if "task" not in recorded else dict(recorded)
    missing = [f for f in SHAPE_FIELDS if f not in facts]
    if missing:
        raise CheckpointError(f"{ckpt / 'meta.json'}: lacks the dataset facts {missing}")
    check_task_facts(facts, ckpt / "meta.json", "dataset.")
    model = build_from_facts(cfg.arch.model_dump(), facts, torch.device(device), ckpt, act_steps)
    which = load_weights(model, ckpt, use_ema=ema)
    return ReadyModel(model, facts, halting or cfg.train.eval_halting, str(ckpt), which, **voting)


def read_export_config(directory: Path) -> dict[str, Any]:
    from core.reading import MAX_JSON_BYTES, decode_json, read_limited

    path = directory / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{path}: file not found (not an exported model directory)")
    config = decode_json(read_limited(path, MAX_JSON_BYTES), str(path))  # bounded; bad UTF-8/JSON: one line
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise InputError(f"{path}: not a {EXPORT_FORMAT} config (format={config.get('format')!r})"
                         if isinstance(config, dict) else f"{path}: expected a JSON object")
    if config.get("version") != EXPORT_VERSION:
        raise InputError(f"{path}: version {config.get('version')!r}; this code reads version {EXPORT_VERSION}")
    return config


def load_exported(directory: Path | str, device: str | torch.device = "cpu", halting: Optional[str] = None,
                  act_steps: Optional[int] = None, **voting: Any) -> ReadyModel:
    """An exported directory -> ReadyModel. The weights load with safetensors (no pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config = read_export_config(directory)
    facts = config.get("data")
    if not isinstance(facts, dict):
        raise InputError(f"{directory / CONFIG_FILE}: field 'data' is {type(facts).__name__}, expected an object")
    check_task_facts(facts, directory / CONFIG_FILE, "data.")
    arch = config.get("arch")
    if not isinstance(arch, dict):
        raise InputError(f"{directory / CONFIG_FILE}: field 'arch' is {type(arch).__name__}, expected an object")
    policy = config.get("eval_halting", "max_steps")
    if policy not in EVAL_HALTING:
        raise InputError(f"{directory / CONFIG_FILE}: eval_halting={policy!r}; expected one of {', '.join(EVAL_HALTING)}")
    halting = halting or policy
    model = build_from_facts(arch, facts, torch.device(device), directory / CONFIG_FILE, act_steps)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(f"{weights}: file not found")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{weights}: cannot read safetensors ({exc})") from exc
    # The checkpoint loader's checks: this model's names, shapes and dtypes, and finite values.
    check_tensors(state, {name: t.detach() for name, t in model.state_dict().items()}, weights, "model")
    model.load_state_dict(state, strict=True)
    return ReadyModel(model, facts, halting, str(directory), str(config.get("weights", "?")), **voting)


def load_model(path: Path | str, device: str | torch.device = "cpu", halting: Optional[str] = None,
               act_steps: Optional[int] = None, votes: int = 1, vote_policy: str = "majority",
               vote_seed: int = 0) -> ReadyModel:
    """The one call: an exported directory, a checkpoint, or a run (its latest checkpoint).
    A test-time budget (training/voting.py): `act_steps` ACT steps per answer instead of the
    trained halt_max_steps, and `votes` answers per instance from the task's symmetries, one
    chosen by `vote_policy`; both checked before anything is read (one-line errors)."""
    from training.voting import check_act_steps, check_votes

    check_act_steps(act_steps)
    votes, vote_policy = check_votes(votes, vote_policy)
    voting = {"votes": votes, "vote_policy": vote_policy, "vote_seed": vote_seed}
    path = Path(path)
    if (path / WEIGHTS_FILE).is_file():
        return load_exported(path, device, halting, act_steps, **voting)
    return load_checkpoint_model(path, device, halting=halting, act_steps=act_steps, **voting)


# ---------------------------------------------------------------------------------------------
# Exporting


def export_model(checkpoint: Path | str, out: Path | str, ema: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Write `out`/model.safetensors and `out`/config.json from a checkpoint; returns the config.
    The directory appears complete or not at all (written aside, then swapped in), and
    `overwrite` replaces only an export this project wrote (dataset/replace_guard.py)."""
    from safetensors.torch import save_file

    checked = check_target(out, EXPORT, overwrite)  # before the slow part, and again before the swap
    ready = load_checkpoint_model(checkpoint, "cpu", ema=ema)
    ckpt = resolve_checkpoint(checkpoint)
    cfg, meta = load_config(ckpt), load_meta(ckpt)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in ready.model.state_dict().items()}
    config = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        MARKER_FIELD: MARKER,
        "arch": cfg["arch"],
        "data": ready.facts,
        "eval_halting": ready.halting,
        "weights": ready.weights,
        "parameters": sum(p.numel() for p in ready.model.parameters()),
        "source": {"checkpoint": str(ckpt), "step": meta.get("step"), "run": ckpt.parent.parent.name},
        "metrics": meta.get("metrics", {}),
    }

    def write(tmp: Path) -> None:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "arch": str(cfg["arch"].get("name"))})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        for path in (tmp / WEIGHTS_FILE, tmp / CONFIG_FILE):
            os.chmod(path, 0o666 & ~_umask())

    write_atomically(checked, write)
    return config
