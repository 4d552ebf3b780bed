import pytest

from layerbench.evaluation.metrics import corpus_metrics, normalize, sample_metrics


def test_identical_texts_score_perfectly():
    m = sample_metrics("The cat sat on the mat.", "The cat sat on the mat.")
    assert m["rouge1"] == m["rouge2"] == m["rougeL"] == m["rougeLsum"] == 1.0
    assert m["exact_match"] == 1.0 and m["edit_distance"] == 0.0
    assert m["sentence_bleu"] == pytest.approx(100.0)


def test_known_values():
    m = sample_metrics("kitten", "sitting")
    assert m["edit_distance"] == 3.0
    assert m["exact_match"] == 0.0
    # unigram overlap: "cats"/"cat" match under stemming; 2 of 3 words shared both ways -> F1 = 2/3
    m = sample_metrics("the cats run", "the cat sleeps")
    assert m["rouge1"] == pytest.approx(2 / 3)


def test_exact_match_normalizes_case_punctuation_and_space():
    assert normalize("  Hello,   World! ") == "hello world"
    assert sample_metrics("Hello, world", "hello world!")["exact_match"] == 1.0


def test_corpus_bleu_is_corpus_level_not_mean():
    preds = ["the cat sat on the mat", "completely different words here"]
    refs = ["the cat sat on the mat", "nothing in common at all"]
    per = [sample_metrics(p, r) for p, r in zip(preds, refs)]
    c = corpus_metrics(preds, refs, per)
    assert c["rouge1"] == pytest.approx((per[0]["rouge1"] + per[1]["rouge1"]) / 2)
    import sacrebleu
    assert c["corpus_bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert c["corpus_bleu"] != pytest.approx((per[0]["sentence_bleu"] + per[1]["sentence_bleu"]) / 2)
    assert c["sentence_bleu"] == pytest.approx((per[0]["sentence_bleu"] + per[1]["sentence_bleu"]) / 2)
