"""The pruning methods, one file each (see `layerbench.surgery.method`). Adding a method: write its file with a
`METHOD`, and add its module to the two lines below; the CLI, the checks, PruneModel, the log and analyze_logs read
this registry."""
from layerbench.surgery.method import PruneMethod
from layerbench.surgery.methods import angular, base, block_influence, gated, lowrank, random_dropout

PRUNE_METHODS: dict[str, PruneMethod] = {module.METHOD.name: module.METHOD for module in (
    base, angular, random_dropout, lowrank, gated, block_influence)}

BASELINE = base.METHOD.name  # the unchanged model every other configuration is compared with
