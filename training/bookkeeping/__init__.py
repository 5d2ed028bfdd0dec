"""Run bookkeeping: a run directory opened, owned and checked before any work (`run`), runs
found, listed and summarised from their files (`runs`), metrics and run.json written (`logger`),
answers shown at each evaluation (`examples`). Uses `training.engine` and `training.inference`;
`training.loop` uses it."""
