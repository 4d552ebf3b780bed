"""Column names of the tables the bench scripts print and store, shared with bench/results_doc.py (no heavy
imports, so the doc can be rebuilt without loading torch)."""

DRAFT_CONFIDENCE_COLUMNS = ["run", "tokens/s vs autoregressive", "acceptance", "mean draft length",
                            "same tokens as autoregressive"]
STAND_IN_COLUMNS = ["model", "fit error (rel.)", "test perplexity", "log-ppl increase recovered"]
ADAPTER_COLUMNS = ["exit layer", "adapter", "top-1 agreement with the full model"]
