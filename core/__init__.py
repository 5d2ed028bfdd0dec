"""What every layer shares and no layer owns: the error types and one-line messages
(`core.errors`), signal handling (`core.early_signals` for start-up, `core.signals` after),
the command-line glue (`core.cli`), nested dicts as dotted keys (`core.dicts`) and bounded
reading of files from anywhere (`core.reading`). Nothing here imports the rest of the project.
Empty on purpose: `core.early_signals` must load with the standard library only."""
