"""The training engine: the state of a run in memory and how it is built (`setup`), saved and
restored (`state`, `checkpoint`: a run directory's checkpoints/), stepped (`optim`, `ema`),
evaluated (`evaluation`), spread over ranks (`distributed`) and stopped (`preemption`). Opening,
owning and recording a run is `training.bookkeeping`'s; `training.loop` drives both. Nothing
here imports either."""
