"""train.depth_curriculum: the schedule is validated (one line naming the field), the model really
recurses less while a phase holds (block applications counted, not timed) and at full depth in
evaluation, the switches follow the steps or the training clock, a run without the option (or
with phases at the arch's own depth) trains exactly as before, a resume across a phase boundary
is bit-exact, and under torch.compile's default scope a switch compiles nothing new."""

from __future__ import annotations

import types

import pytest
import torch

from conftest import assert_one_line_error, build_lsa, pretrain_argv, run_in_process, sigterm_after_step, tiny_config
from models.act import ACTModel
from models.layers import Block
from training.bookkeeping.runs import read_metrics
from training.config import ConfigError
from training.engine.curriculum import DepthSchedule

PROJECT = "trm-lsa-cpu"
# The tiny runs' model: TRM with 2 layers at H_cycles 2, L_cycles 3; two phases before the full depth.
DEPTH = ["arch.H_cycles=2", "arch.L_cycles=3"]
TWO_PHASES = "train.depth_curriculum={by:steps,phases:[{until:0.25,H_cycles:1,L_cycles:1},{until:0.5,L_cycles:2}]}"


def curriculum(by: str, *phases: str) -> str:
    return f"train.depth_curriculum={{by:{by},phases:[{','.join(phases)}]}}"


def applications(arch, h_cycles: int, l_cycles: int) -> int:
    """Forward block applications of one ACT step at (h_cycles, l_cycles), by the config's formula."""
    return type(arch)(**{**arch.model_dump(), "H_cycles": h_cycles, "L_cycles": l_cycles}).block_applications()[0]


@pytest.fixture
def block_calls(monkeypatch):
    """Counts every block application (Block.forward) and, per ACT step of a model, records
    (training mode, the depth override, the block applications of that step)."""
    calls = {"blocks": 0, "steps": []}
    block_forward, act_forward = Block.forward, ACTModel.forward

    def counting_block(self, *args, **kwargs):
        calls["blocks"] += 1
        return block_forward(self, *args, **kwargs)

    def recording_step(self, carry, batch):
        before = calls["blocks"]
        out = act_forward(self, carry, batch)
        calls["steps"].append((self.training, self.depth_override, calls["blocks"] - before))
        return out

    monkeypatch.setattr(Block, "forward", counting_block)
    monkeypatch.setattr(ACTModel, "forward", recording_step)
    return calls


# ---------------------------------------------------------------------------------------------
# The schema


@pytest.mark.parametrize("overrides, culprit", [
    ([curriculum("steps", "{until:0.3,H_cycles:0}")], "train.depth_curriculum.phases.0.H_cycles"),
    ([curriculum("steps", "{until:0.3,L_cycles:4}")], "train.depth_curriculum.phases[0].L_cycles=4 is more than arch.L_cycles=3"),
    ([curriculum("steps", "{until:0.3,H_cycles:1}", "{until:0.3,L_cycles:1}")], "phases[1].until=0.3 is not after"),
    ([curriculum("steps", "{until:0.5,H_cycles:1}", "{until:0.2,L_cycles:1}")], "phases[1].until=0.2 is not after"),
    ([curriculum("steps", "{until:0}")], "train.depth_curriculum.phases.0.until"),
    ([curriculum("steps", "{until:1.5,H_cycles:1}")], "train.depth_curriculum.phases.0.until"),
    ([curriculum("steps", "{until:0.3}")], "sets neither H_cycles nor L_cycles"),
    ([curriculum("steps", "{until:0.3,H_cycles:1,depth:2}")], "train.depth_curriculum.phases.0.depth"),
    ([curriculum("steps")], "train.depth_curriculum.phases"),
    ([curriculum("steps", *[f"{{until:{i / 10},H_cycles:1}}" for i in range(1, 10)])], "train.depth_curriculum.phases"),
    (["train.depth_curriculum={phases:[{until:0.3,H_cycles:1}]}"], "train.depth_curriculum.by"),
    ([curriculum("epochs", "{until:0.3,H_cycles:1}")], "train.depth_curriculum.by"),
    ([curriculum("time", "{until:0.3,H_cycles:1}")], "train.max_train_seconds"),
    (["train.depth_curriculum=[{until:0.3,H_cycles:1}]"], "train.depth_curriculum"),
    ([curriculum("steps", "{until:0.3,H_cycles:1}"), "arch=transformer", "~arch.H_cycles", "~arch.L_cycles",
      "arch.halt_max_steps=1"], "arch transformer has no H_cycles (it does not recurse"),
])
def test_bad_schedules_are_one_line_naming_the_field(tmp_path, overrides, culprit):
    with pytest.raises(ConfigError) as info:
        tiny_config(tmp_path, *DEPTH, *overrides)
    message = str(info.value)
    assert culprit in message and "\n" not in message, message


def test_good_schedules(tmp_path):
    cfg = tiny_config(tmp_path, *DEPTH, TWO_PHASES)
    assert [(p.until, p.H_cycles, p.L_cycles) for p in cfg.train.depth_curriculum.phases] == [(0.25, 1, 1), (0.5, None, 2)]
    assert tiny_config(tmp_path).train.depth_curriculum is None  # off by default
    hrm = tiny_config(tmp_path, "arch=hrm", "arch.H_cycles=2", "arch.L_cycles=2",
                      curriculum("time", "{until:1,H_cycles:1,L_cycles:1}"), "train.max_train_seconds=60")
    assert hrm.train.depth_curriculum.by == "time"


def test_pretrain_refuses_a_bad_schedule_in_one_line(tmp_path):
    result = run_in_process(*pretrain_argv(tmp_path / "data", tmp_path / "runs", "--check",
                                           curriculum("steps", "{until:0.3,H_cycles:5}")))
    assert_one_line_error(result, "train.depth_curriculum.phases[0].H_cycles=5", "arch.H_cycles=1")


@pytest.mark.parametrize("arch", ["hrm", "transformer"])
def test_a_baseline_on_a_recipe_with_a_curriculum_is_told_how_to_switch_it_off(arch, tmp_path):
    """cfg_arith_mul (and the _400s recipes) carry TRM's curriculum: `arch=hrm` (H2/L2, below its
    H2/L4 phase) or `arch=transformer` (no cycles) is refused in one line that says what runs it."""
    result = run_in_process("pretrain.py", "--config-name", "cfg_arith_mul", f"arch={arch}", "--check")
    assert_one_line_error(result, "train.depth_curriculum.phases[", "train.depth_curriculum=null trains without")
    assert run_in_process("pretrain.py", "--config-name", "cfg_arith_mul", f"arch={arch}", "--check",
                          "train.depth_curriculum=null", f"logging.runs_dir={tmp_path / 'runs'}").returncode == 0


def test_schedule_phases_and_depths(tmp_path):
    cfg = tiny_config(tmp_path, *DEPTH, TWO_PHASES)
    schedule = DepthSchedule(cfg.train.depth_curriculum, cfg.arch, None)
    # A phase's missing count is the arch's; after the last phase, the arch's full depth.
    assert schedule.depths == [{"H_cycles": 1, "L_cycles": 1}, {"H_cycles": 2, "L_cycles": 2},
                               {"H_cycles": 2, "L_cycles": 3}]
    assert [schedule.phase(schedule.progress(step, 40, 0.0)) for step in (0, 9, 10, 19, 20, 39, 40)] == [0, 0, 1, 1, 2, 2, 2]
    assert [schedule.describe(phase, 40) for phase in range(3)] == [
        "H_cycles=1, L_cycles=1 to step 10 (25% of the 40 planned steps)",
        "H_cycles=2, L_cycles=2 to step 20 (50% of the 40 planned steps)",
        "H_cycles=2, L_cycles=3 (the full depth) from here on"]
    assert schedule.describe(0, 7) == "H_cycles=1, L_cycles=1 to step 2 (25% of the 7 planned steps)"  # 1/7 < 0.25 <= 2/7
    timed = DepthSchedule(tiny_config(tmp_path, *DEPTH, TWO_PHASES.replace("steps", "time"),
                                      "train.max_train_seconds=400").train.depth_curriculum, cfg.arch, 400.0)
    assert [timed.phase(timed.progress(10**6, 40, s)) for s in (0.0, 99.9, 100.0, 199.9, 200.0, 500.0)] == [0, 0, 1, 1, 2, 2]
    assert timed.describe(1, 40) == "H_cycles=2, L_cycles=2 until 50% of train.max_train_seconds=400"


def test_each_rank_follows_the_agreed_clock_under_torchrun(tmp_path):
    """With several ranks the time phase comes from the clock all ranks agreed at the last log
    step (agreed_seconds), not from the rank's own training seconds."""
    from training.engine.distributed import World
    from training.loop import set_training_depth

    cfg = tiny_config(tmp_path, *DEPTH, TWO_PHASES.replace("steps", "time"), "train.max_train_seconds=100")
    state = types.SimpleNamespace(
        depth_schedule=DepthSchedule(cfg.train.depth_curriculum, cfg.arch, 100.0), step=0, total_steps=10,
        train_seconds=60.0, agreed_seconds=20.0, model=types.SimpleNamespace(depth_override="unset"), world=World())
    assert set_training_depth(state) == 2 and state.model.depth_override is None  # one process: its own 60 s
    state.world = World(rank=1, world_size=2)
    assert set_training_depth(state) == 0 and state.model.depth_override == {"H_cycles": 1, "L_cycles": 1}
    state.agreed_seconds = 30.0
    assert set_training_depth(state) == 1 and state.model.depth_override == {"H_cycles": 2, "L_cycles": 2}


# ---------------------------------------------------------------------------------------------
# The model runs the curriculum's depth in training, the full depth in evaluation


@pytest.mark.parametrize("arch", [
    dict(name="trm", num_layers=2, H_cycles=3, L_cycles=4),
    dict(name="trm", num_layers=1, H_cycles=2, L_cycles=2, no_act_continue=False),  # with the Q-continue target
    dict(name="hrm", H_layers=2, L_layers=1, H_cycles=3, L_cycles=2),
])
def test_model_runs_fewer_block_applications_while_a_phase_holds(arch, block_calls):
    from models import build_model, validate_arch
    from models.losses import ACTLossHead
    from test_model import META, batch

    torch.manual_seed(0)
    cfg = validate_arch(dict(arch, hidden_size=32, num_heads=4, halt_max_steps=3, puzzle_emb_len=2, forward_dtype="float32"))
    model = build_model(cfg, META, torch.device("cpu"))
    head, b = ACTLossHead(model), batch(6)
    # Per training step: the step itself, and again for the Q-continue target where the family trains one.
    per_step = 2 if model.bootstraps_q_continue else 1
    full = applications(cfg, cfg.H_cycles, cfg.L_cycles)
    for depth in ({"H_cycles": 1, "L_cycles": 1}, {"H_cycles": 2, "L_cycles": 1}, {"H_cycles": 1, "L_cycles": 2}, None):
        model.train()
        model.depth_override = depth
        start = block_calls["blocks"]
        head(model.initial_carry(b), b)[1].backward()
        h, l = (depth or {}).get("H_cycles", cfg.H_cycles), (depth or {}).get("L_cycles", cfg.L_cycles)
        assert block_calls["blocks"] - start == per_step * applications(cfg, h, l), depth
        if depth is not None:
            assert applications(cfg, h, l) < full
        # Evaluation (eval mode) runs the full depth whatever the override says.
        model.eval()
        start = block_calls["blocks"]
        with torch.no_grad():
            head(model.initial_carry(b), b)
        assert block_calls["blocks"] - start == full, depth


# ---------------------------------------------------------------------------------------------
# Training runs (seconds each on a CPU)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return build_lsa(tmp_path_factory.mktemp("data") / "lsa4", num_train=120, num_test=20, num_aug=2)


def losses(run_dir):
    return {r["step"]: r["train/lm_loss"] for r in read_metrics(run_dir) if "train/lm_loss" in r}


@pytest.mark.slow
def test_training_follows_the_step_schedule_and_evaluates_at_full_depth(tmp_path, data_dir, block_calls):
    from training.loop import train

    cfg = tiny_config(tmp_path, *DEPTH, TWO_PHASES, "train.max_steps=40", "train.eval_interval=20",
                      "train.log_every=5", "logging.run_name=c", data=data_dir)
    train(cfg)
    training = [(depth, calls) for is_training, depth, calls in block_calls["steps"] if is_training]
    evaluation = [calls for is_training, _, calls in block_calls["steps"] if not is_training]
    # Steps 1-10 (a quarter of 40): H 1, L 1; 11-20: H 2, L 2; 21-40: the arch's H 2, L 3. 2 layers each.
    expected = [2 * 1 * (1 + 1)] * 10 + [2 * 2 * (2 + 1)] * 10 + [2 * 2 * (3 + 1)] * 20
    assert [calls for _, calls in training] == expected
    assert [depth for depth, _ in training] == [{"H_cycles": 1, "L_cycles": 1}] * 10 + [{"H_cycles": 2, "L_cycles": 2}] * 10 + [None] * 20
    assert evaluation and set(evaluation) == {2 * 2 * (3 + 1)}  # both evaluations (steps 20, 40): full depth
    logged = [(r["step"], r["train/H_cycles"], r["train/L_cycles"]) for r in read_metrics(tmp_path / "runs" / PROJECT / "c")
              if "train/lm_loss" in r]
    assert logged == [(5, 1, 1), (10, 1, 1), (15, 2, 2), (20, 2, 2), (25, 2, 3), (30, 2, 3), (35, 2, 3), (40, 2, 3)]


@pytest.mark.slow
def test_hrm_trains_through_the_schedule(tmp_path, data_dir, block_calls):
    from training.loop import train

    cfg = tiny_config(tmp_path, "arch=hrm", "arch.H_layers=1", "arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=2",
                      curriculum("steps", "{until:0.5,H_cycles:1,L_cycles:1}"), "train.max_steps=8",
                      "train.eval_interval=8", "logging.run_name=h", data=data_dir)
    result = train(cfg)
    assert result["step"] == 8
    # Each HRM training step runs its core twice (the Q-continue target): (L + H) per H cycle, x2.
    training = [calls for is_training, _, calls in block_calls["steps"] if is_training]
    assert training == [2 * 1 * (1 + 1)] * 4 + [2 * 2 * (2 + 1)] * 4
    assert {calls for is_training, _, calls in block_calls["steps"] if not is_training} == {2 * (2 + 1)}


@pytest.mark.slow
def test_off_and_full_depth_phases_train_exactly_as_before(tmp_path, data_dir):
    """Phases at the arch's own depth change nothing: the override path itself (the model's
    `cycles`, the loop's bookkeeping) leaves every loss and weight as the run without the option.
    (That the run without it trains as before the option existed: tests/test_golden.py.)"""
    from test_resilience import assert_same_tensors, final_state
    from training.loop import train

    common = [*DEPTH, "train.max_steps=12", "train.eval_interval=12", "train.log_every=1"]
    off = train(tiny_config(tmp_path, *common, "logging.run_name=off", data=data_dir))
    same = train(tiny_config(tmp_path, *common, curriculum("steps", "{until:0.5,H_cycles:2,L_cycles:3}"),
                             "logging.run_name=same", data=data_dir))
    runs = tmp_path / "runs" / PROJECT
    assert losses(runs / "off") == losses(runs / "same") and len(losses(runs / "off")) == 12
    assert_same_tensors(final_state(runs / "off"), final_state(runs / "same"))
    assert off["eval/lsa/optimal_cost_rate"] == same["eval/lsa/optimal_cost_rate"]
    assert not any("train/H_cycles" in r for r in read_metrics(runs / "off"))  # nothing new in the records without it
    # ... and a real curriculum does change training (the comparison above can fail).
    train(tiny_config(tmp_path, *common, TWO_PHASES, "logging.run_name=shallow", data=data_dir))
    assert losses(runs / "shallow")[1] != losses(runs / "off")[1]


@pytest.mark.slow
def test_resume_across_phase_boundaries_is_bit_exact(tmp_path, data_dir, monkeypatch):
    from test_resilience import assert_same_tensors, final_state
    from training.loop import train

    common = [*DEPTH, TWO_PHASES, "train.max_steps=40", "train.eval_interval=20", "train.log_every=1",
              "train.keep_checkpoints=5"]
    straight = train(tiny_config(tmp_path, *common, "logging.run_name=straight", data=data_dir))
    # Stopped right after step 10, the last of the first phase; the resumed run crosses both boundaries.
    with sigterm_after_step(monkeypatch, 10):
        first = train(tiny_config(tmp_path, *common, "logging.run_name=split", data=data_dir))
    assert first["preempted"] and first["step"] == 10
    second = train(tiny_config(tmp_path, *common, "logging.run_name=split", "train.resume=true", data=data_dir))
    assert second["step"] == 40
    runs = tmp_path / "runs" / PROJECT
    assert losses(runs / "split") == losses(runs / "straight")
    depths = {r["step"]: (r["train/H_cycles"], r["train/L_cycles"]) for r in read_metrics(runs / "split") if "train/H_cycles" in r}
    assert depths[10] == (1, 1) and depths[11] == (2, 2) and depths[21] == (2, 3)
    assert_same_tensors(final_state(runs / "split"), final_state(runs / "straight"))
    assert second["eval/lsa/optimal_cost_rate"] == straight["eval/lsa/optimal_cost_rate"]


class TickingClock:
    """A stand-in for the loop's time module: every perf_counter() call is 0.5 s later, so that the
    training seconds grow step by step whatever the machine's speed."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 0.5
        return self.now


@pytest.mark.slow
def test_time_schedule_follows_the_training_clock_and_resumes_in_its_phase(tmp_path, data_dir, monkeypatch):
    import training.loop as loop

    budget = 40.0
    seen = []  # (training seconds before the step, the depth it ran)
    original = loop.train_step

    def recording(state):
        seen.append((state.train_seconds, state.model.depth_override))
        return original(state)

    monkeypatch.setattr(loop, "train_step", recording)
    monkeypatch.setattr(loop, "time", TickingClock())
    common = [*DEPTH, curriculum("time", "{until:0.5,H_cycles:1,L_cycles:1}"), f"train.max_train_seconds={budget}",
              "train.max_steps=1000", "train.eval_interval=1000", "train.log_every=2", "logging.run_name=t"]
    with sigterm_after_step(monkeypatch, 4):
        first = loop.train(tiny_config(tmp_path, *common, data=data_dir))
    assert first["preempted"] and seen[-1][1] == {"H_cycles": 1, "L_cycles": 1}
    stopped_at = first["train_seconds"]
    assert 0 < stopped_at < budget / 2
    seen.clear()
    second = loop.train(tiny_config(tmp_path, *common, "train.resume=true", data=data_dir))
    assert second["train_seconds"] >= budget and not second["preempted"]
    assert seen[0][0] == stopped_at  # the clock continues from the checkpoint's training seconds
    for seconds, depth in seen:
        assert depth == ({"H_cycles": 1, "L_cycles": 1} if seconds / budget < 0.5 else None), (seconds, depth)
    assert {str(depth) for _, depth in seen} == {str({"H_cycles": 1, "L_cycles": 1}), "None"}  # both phases ran


# ---------------------------------------------------------------------------------------------
# torch.compile: a switch under the default scope compiles nothing new


@pytest.mark.slow
def test_blocks_scope_compiles_nothing_new_at_a_switch(monkeypatch):
    """compile_scope=blocks (the default): each block's graph takes (B, P+L, D) whatever the depth,
    so a switch neither adds a graph nor recompiles one (Dynamo's own counters), and each depth
    computes what the eager step computes."""
    from torch._dynamo.utils import counters

    from models.losses import ACTLossHead
    from test_compile_scope import compiled_with, family, step_results

    torch._dynamo.reset()
    counters.clear()
    model = family("trm").train()  # H_cycles 2, L_cycles 2, 2 layers
    depths = [{"H_cycles": 2, "L_cycles": 1}, {"H_cycles": 1, "L_cycles": 1}, None, {"H_cycles": 1, "L_cycles": 2}]
    eager = []
    for depth in depths:
        model.depth_override = depth
        eager.append(step_results(ACTLossHead(model), model))
    fn, graphs = compiled_with(monkeypatch, ACTLossHead(model), "blocks")
    try:
        got = []
        for depth in depths:
            model.depth_override = depth
            got.append(step_results(fn, model))
        frames, recompiles = dict(counters["frames"]), sum(counters["recompiles"].values())
    finally:
        torch._dynamo.reset()
        model.depth_override = None
    # Two graphs (with and without gradients), both traced in the first phase (it has a no-grad cycle).
    assert len(graphs) == 2 and frames.get("ok") == 2 and recompiles == 0, frames
    for depth, (g, e) in zip(depths, zip(got, eager)):
        torch.testing.assert_close(g[1], e[1], rtol=1e-5, atol=1e-5, msg=str(depth))
        for key in model.STATES:
            torch.testing.assert_close(g[0][key], e[0][key], rtol=1e-5, atol=1e-5)
    assert not torch.equal(eager[0][1], eager[2][1])  # the depths really differ


@pytest.mark.slow
def test_step_scope_traces_each_depth_and_raises_the_recompile_limit(monkeypatch):
    """compile_scope=step: Dynamo guards on the depth, so each depth is its own trace (never a
    stale graph of another depth), and compile_step makes room for them under the recompile limit."""
    from models.losses import ACTLossHead
    from test_compile_scope import compiled_with, family, step_results
    from training.engine.setup import compile_step

    name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    before = getattr(torch._dynamo.config, name)
    with torch._dynamo.config.patch({name: before}):  # compile_step's raise undone afterwards
        torch._dynamo.reset()
        model = family("trm").train()
        shallow = {"H_cycles": 1, "L_cycles": 1}
        depths = [shallow, None, shallow]  # the loop hands the model each phase's one dict
        eager = []
        for depth in depths:
            model.depth_override = depth
            eager.append(step_results(ACTLossHead(model), model))
        fn, graphs = compiled_with(monkeypatch, ACTLossHead(model), "step")
        try:
            compile_step(ACTLossHead(family("trm")), "blocks", depths=3)  # (a model never run: nothing compiles)
            assert getattr(torch._dynamo.config, name) == before  # blocks: nothing to make room for
            compile_step(ACTLossHead(model), "step", depths=3)
            assert getattr(torch._dynamo.config, name) == before + 2
            got = []
            for depth in depths:
                model.depth_override = depth
                got.append(step_results(fn, model))
        finally:
            torch._dynamo.reset()
            model.depth_override = None
    assert getattr(torch._dynamo.config, name) == before
    assert len(graphs) == 2  # one per distinct depth; the third step reuses the first depth's graph
    for g, e in zip(got, eager):
        torch.testing.assert_close(g[1], e[1], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_two_ranks_switch_together_at_a_log_step(tmp_path):
    """torchrun, 2 ranks (gloo), a time schedule: each rank measures its own training time, so the
    ranks take the clock they agreed at the last log step and switch at the step after it."""
    from test_distributed import launch

    data = build_lsa(tmp_path / "lsa4", num_train=100, num_test=21, num_aug=3)
    run = launch(2, data, tmp_path / "runs", "logging.run_name=t2", curriculum("time", "{until:0.5,L_cycles:1}"),
                 "train.max_train_seconds=4", "train.max_steps=100000", "train.log_every=10",
                 "train.eval_interval=100000")
    assert run.returncode == 0, run.stderr[-3000:]
    switches = [line for line in run.stdout.splitlines() if line.startswith("depth curriculum from step")]
    assert len(switches) == 2 and switches[0].startswith("depth curriculum from step 1: H_cycles=1, L_cycles=1 until 50%")
    step = int(switches[1].split()[4].rstrip(":"))
    assert step > 1 and (step - 1) % 10 == 0 and "(the full depth)" in switches[1], switches
    logged = [r["train/L_cycles"] for r in read_metrics(tmp_path / "runs" / PROJECT / "t2") if "train/L_cycles" in r]
    assert logged == sorted(logged) and logged[0] == 1 and logged[-1] == 2


@pytest.mark.parametrize("name, clock", [("cfg_lsa_400s", "steps"), ("cfg_sudoku_400s", "time")])
def test_the_shipped_budget_recipes_have_the_curriculum_and_their_cpu_presets_do_not(name, clock):
    """cfg_lsa_400s and cfg_sudoku_400s ship the depth curriculum chosen on val (docs/BENCHMARKS.md,
    issues 20 and 25; Sudoku with the LR's cosine over the 400 s by the clock); with device=cpu (what
    the pace warning tells a CPU user to add) the CPU model's H 2 / L 2 is shallower than the middle
    phase, so the preset switches the curriculum off instead of failing, and keeps the LR clock."""
    from training.config import validate_config
    from training.hydra_guard import compose_config

    gpu = validate_config(compose_config(name, []))
    assert gpu.train.depth_curriculum.by == "time" and gpu.train.max_train_seconds == 400
    assert [(p.until, p.H_cycles, p.L_cycles) for p in gpu.train.depth_curriculum.phases] == [(0.3, 1, 2), (0.6, 2, 4)]
    assert (gpu.arch.H_cycles, gpu.arch.L_cycles) == (3, 6) and gpu.optim.lr_schedule_clock == clock
    for cpu in (validate_config(compose_config(name, ["device=cpu"])),
                validate_config(compose_config(f"{name}_cpu", []))):
        assert cpu.train.depth_curriculum is None and cpu.train.device == "cpu"
        assert cpu.optim.lr_schedule_clock == clock and cpu.train.max_train_seconds == 400
    # what the preset avoids: the recipe's schedule on a model as shallow as the CPU one
    with pytest.raises(ConfigError, match=r"phases\[1\]\.L_cycles=4 is more than arch\.L_cycles=2"):
        validate_config(compose_config(name, ["arch.L_cycles=2"]))
