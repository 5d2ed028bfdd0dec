"""What every layer shares and no layer owns: the error types and one-line messages
(`core.errors`), signal handling (`core.early_signals` for start-up, `core.signals` after),
and the command-line glue (`core.cli`). Nothing here imports the rest of the project.
Empty on purpose: `core.early_signals` must load with the standard library only."""
