"""Everything that changes a model: the pruning methods, one file each in `methods/` (registry `PRUNE_METHODS`),
applied by `PruneModel`; stand-ins, exit adapters and draft heads fitted on calibration text."""
