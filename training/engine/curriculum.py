"""The depth curriculum (train.depth_curriculum): cheap shallow recursion early in a run, the
arch's full depth later.

A phase `{until: f, H_cycles: h, L_cycles: l}` holds while the run's progress is below f; after
the last phase the arch's own counts apply. Progress is a fraction of the time budget
(`by: time`: training seconds, the first step's compile included, over train.max_train_seconds:
what a fixed-budget recipe such as cfg_lsa_400s needs, since shallow steps are faster and the
number of steps that fit is not known in advance) or of the planned steps (`by: steps`:
steps done over train.max_steps or the epochs' steps; bit-exact across a resume).

Both clocks are part of the checkpointed train state (`step`, `train_seconds`), so a resumed
run continues in the phase it stopped in. Under torchrun the time each rank measured differs a
little; the ranks switch together, at the log step (train.log_every) where they all-reduce it
(`TrainState.agreed_seconds`, training/loop.py: read_back).

The depth reaches the model as `ACTModel.depth_override`, which only training mode reads:
evaluation runs the full depth. No shape changes, so under train.compile_scope=blocks (each
block compiled alone, the recursion a Python loop) a switch compiles nothing new; under
step/region the step graph is traced once more per distinct depth (training/engine/setup.py:
compile_step raises Dynamo's recompile limit for those).
"""

from __future__ import annotations

from typing import Any, Optional

from training.config import DepthCurriculum


class DepthSchedule:
    """The curriculum of one run: phase and cycle counts at a point of the run."""

    def __init__(self, curriculum: DepthCurriculum, arch: Any, max_train_seconds: Optional[float]):
        self.by = curriculum.by
        self.budget = max_train_seconds
        self.ends = [phase.until for phase in curriculum.phases]
        # Each phase's counts, the arch's where the phase leaves one out; last: the arch's full depth.
        full = {name: getattr(arch, name) for name in type(arch).CYCLE_FIELDS}
        self.depths = [{name: getattr(phase, name) or value for name, value in full.items()}
                       for phase in curriculum.phases] + [full]

    def progress(self, step: int, total_steps: int, seconds: float) -> float:
        """The fraction of the run spent: of the time budget (by time) or the planned steps (by steps)."""
        if self.by == "time":
            return seconds / self.budget
        return step / max(1, total_steps)

    def phase(self, progress: float) -> int:
        """Index of the phase at `progress` (len(phases): past the last, the full depth)."""
        return next((i for i, end in enumerate(self.ends) if progress < end), len(self.ends))

    def describe(self, phase: int, total_steps: int) -> str:
        """'H_cycles=1, L_cycles=2 until 30% of train.max_train_seconds=400' (for the log)."""
        depth = ", ".join(f"{name}={value}" for name, value in self.depths[phase].items())
        if phase == len(self.ends):
            return f"{depth} (the full depth) from here on"
        if self.by == "time":
            return f"{depth} until {100 * self.ends[phase]:g}% of train.max_train_seconds={self.budget:g}"
        last = max(0, int(self.ends[phase] * total_steps) - 1)  # the steps done when the next phase starts
        while last < total_steps and self.phase(self.progress(last, total_steps, 0.0)) <= phase:
            last += 1
        return f"{depth} to step {last} ({100 * self.ends[phase]:g}% of the {total_steps} planned steps)"
