"""Quality metrics (registry): ROUGE F1 with stemming (rouge-score), BLEU (sacrebleu, 0-100: `sentence_bleu` per
sample, `corpus_bleu` per run), normalized exact match and character Levenshtein distance."""
from __future__ import annotations

import re
import string
from typing import Callable

import sacrebleu
from rapidfuzz.distance import Levenshtein
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ROUGE_SETTINGS = {"package": "rouge-score", "measure": "f1", "use_stemmer": True, "types": list(ROUGE_TYPES)}
BLEU_SETTINGS = {"package": "sacrebleu", "sentence_bleu": "per sample (run value: their mean)",
                 "corpus_bleu": "per run", "scale": "0-100", "tokenize": "13a"}

_scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _rouge(prediction: str, reference: str) -> dict[str, float]:
    # rougeLsum splits summaries into sentences on newlines
    scores = _scorer.score(reference.strip(), prediction.strip())
    return {k: scores[k].fmeasure for k in ROUGE_TYPES}


# per-sample metrics: name -> fn(prediction, reference) -> {metric: value}
SAMPLE_METRICS: dict[str, Callable[[str, str], dict[str, float]]] = {
    "rouge": _rouge,
    "sentence_bleu": lambda p, r: {"sentence_bleu": sacrebleu.sentence_bleu(p, [r]).score},
    "exact_match": lambda p, r: {"exact_match": float(normalize(p) == normalize(r))},
    "edit_distance": lambda p, r: {"edit_distance": float(Levenshtein.distance(p.strip(), r.strip()))},
}


def sample_metrics(prediction: str, reference: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fn in SAMPLE_METRICS.values():
        out.update(fn(prediction, reference))
    return out


def corpus_metrics(predictions: list[str], references: list[str], per_sample: list[dict[str, float]]) -> dict[str, float]:
    """Means of per-sample metrics, plus corpus BLEU over all predictions."""
    n = len(per_sample)
    out = {k: sum(s[k] for s in per_sample) / n for k in per_sample[0]} if n else {}
    if n:
        out["corpus_bleu"] = sacrebleu.corpus_bleu(predictions, [references]).score
    return out
