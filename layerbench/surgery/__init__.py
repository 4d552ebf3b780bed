"""Pruning, compression and skipping methods applied to a loaded model (`PruneModel`, registry
`PRUNE_METHODS`)."""
