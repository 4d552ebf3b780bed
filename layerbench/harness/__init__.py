"""lm-evaluation-harness on this project's engine: the `layerbench` LM (every prune method, stand-ins, exit
adapters, early exit and self-speculative generation), its model_args, and task loading (local task folders,
hub tasks with one-line failures)."""
