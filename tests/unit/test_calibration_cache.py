"""Calibration products are computed once per key and read back exactly; a damaged entry is recomputed with one
warning; the key follows every keyed parameter; --no_calibration_cache neither reads nor writes."""
import json
import os
import random

import torch

import benchmark
from layerbench.models.fingerprint import model_content_hash
from layerbench.surgery import calibration, exit_adapter, stand_in
from layerbench.surgery.calibration_cache import TENSORS, CalibrationCache
from layerbench.surgery.draft_vocabulary import choose_draft_vocabulary
from layerbench.surgery.exit_adapter import fit_exit_adapter
from layerbench.surgery.layers import make_identity_layers
from pruned_model import Calibration, PruneConfig, PruneModel
from tests.helpers import VOCAB, tiny_llama

PRODUCTS = ["last_token_states", "stand_ins", "exit_adapter", "draft_vocabulary"]


def _calibration(n=8, seed=0):
    rng = random.Random(seed)
    ids = [[rng.randrange(VOCAB) for _ in range(rng.randrange(5, 30))] for _ in range(n)]
    return lambda: Calibration(ids, {"dataset": "synthetic", "split": "none", "seed": seed})


def _run(root, *, samples=8, max_length=512, model_seed=0, lines=None):
    """Angular n=2 with linear stand-ins, an exit adapter after block 2 and a 20-token draft vocabulary."""
    model = tiny_llama(num_layers=6, seed=model_seed)
    make_identity_layers(model, [3])
    cache = CalibrationCache(str(root) if root else None,
                             lambda: model_content_hash(model, None, str(root)),
                             log=lines.append if lines is not None else None)
    config = PruneConfig(method="angular", prune_n=2, stand_in="linear", calibration_samples=samples,
                         calibration_max_length=max_length)
    pm = PruneModel(model, None, config, _calibration(), cache)
    pm.apply()
    adapter = fit_exit_adapter(pm, 2)
    vocab = choose_draft_vocabulary(pm, 20, {0})
    return pm, adapter, vocab


def _products(pm):
    return {k: v["status"] for k, v in pm.report["calibration_products"].items()}


def _entries(root):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f == TENSORS)


def _assert_same(first, second):
    (pm1, a1, v1), (pm2, a2, v2) = first, second
    assert pm2.report["removed_layers"] == pm1.report["removed_layers"]
    assert pm2.report["distances"] == pm1.report["distances"]
    for f1, f2 in zip(pm1._stand_ins, pm2._stand_ins):
        assert torch.equal(f1["W"], f2["W"]) and torch.equal(f1["b"], f2["b"])
        assert torch.equal(f1["first_update"], f2["first_update"])
    assert torch.equal(a1["W"], a2["W"]) and torch.equal(a1["b"], a2["b"])
    assert v2["token_ids"] == v1["token_ids"]


def test_second_run_reads_every_product_back_exactly(tmp_path, monkeypatch):
    lines = []
    first = _run(tmp_path, lines=lines)
    assert _products(first[0]) == dict.fromkeys(PRODUCTS, "computed")
    assert len(_entries(tmp_path)) == 4

    def no_calibration(*args, **kwargs):
        raise AssertionError("calibration ran although every product is cached")
    for module in (calibration, stand_in, exit_adapter):
        monkeypatch.setattr(module, "run_calibration", no_calibration)
    lines.clear()
    second = _run(tmp_path, lines=lines)
    assert _products(second[0]) == dict.fromkeys(PRODUCTS, "cached")
    assert lines == [f"calibration: {p} cached" for p in PRODUCTS]
    _assert_same(first, second)


def test_a_damaged_entry_is_recomputed_with_one_warning(tmp_path, capsys):
    first = _run(tmp_path)
    states_key = first[0].report["calibration_products"]["last_token_states"]["key"]
    [damaged] = [p for p in _entries(tmp_path) if os.path.basename(os.path.dirname(p)).startswith(states_key)]
    with open(damaged, "r+b") as f:
        f.truncate(os.path.getsize(damaged) - 7)
    capsys.readouterr()
    second = _run(tmp_path)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "is damaged" in warnings[0] and "recomputing it" in warnings[0]
    assert _products(second[0]) == {**dict.fromkeys(PRODUCTS, "cached"), "last_token_states": "computed"}
    _assert_same(first, second)
    assert _products(_run(tmp_path)[0]) == dict.fromkeys(PRODUCTS, "cached")  # the entry was rewritten


def test_a_changed_checksum_or_unreadable_meta_is_damage_too(tmp_path, capsys):
    _run(tmp_path)
    entry = os.path.dirname(_entries(tmp_path)[0])
    with open(os.path.join(entry, "meta.json"), "w") as f:
        f.write("{not json")
    capsys.readouterr()
    pm = _run(tmp_path)[0]
    assert sum(line.startswith("warning:") for line in capsys.readouterr().err.splitlines()) == 1
    assert sorted(_products(pm).values()).count("computed") == 1


CHANGES = [
    ({"samples": 6}, PRODUCTS),  # other calibration text: every product
    ({"max_length": 12}, PRODUCTS),
    ({"model_seed": 1}, ["last_token_states", "stand_ins", "exit_adapter"]),  # other weights: not the vocabulary
]


def test_the_key_changes_with_each_keyed_parameter(tmp_path):
    base = _run(tmp_path)[0].report["calibration_products"]
    for change, recomputed in CHANGES:
        changed = _run(tmp_path, **change)[0].report["calibration_products"]
        for product in PRODUCTS:
            assert (changed[product]["key"] != base[product]["key"]) == (product in recomputed), (change, product)
            assert changed[product]["status"] == ("computed" if product in recomputed else "cached"), (change, product)


def test_the_exit_adapter_key_follows_the_exit_layer_and_the_pruning(tmp_path):
    pm = _run(tmp_path)[0]
    keys = set()
    for exit_block in (1, 2):
        fit_exit_adapter(pm, exit_block)
        keys.add(pm.report["calibration_products"]["exit_adapter"]["key"])
    assert len(keys) == 2
    plain = PruneModel(tiny_llama(num_layers=6), None, PruneConfig(method="base"), _calibration(),
                       CalibrationCache(str(tmp_path), lambda: model_content_hash(pm.model, None, str(tmp_path))))
    fit_exit_adapter(plain, 2)  # same weights hash on purpose: only the surgery differs
    assert plain.report["calibration_products"]["exit_adapter"]["key"] not in keys


def test_without_a_root_nothing_is_read_or_written(tmp_path):
    pm = _run(None)[0]
    assert _products(pm) == dict.fromkeys(PRODUCTS, "computed (cache off)")
    assert not os.listdir(tmp_path)


def test_no_calibration_cache_flag_neither_reads_nor_writes(tmp_path, tiny_model_dir, monkeypatch):
    """Through the CLI: the first run fills the cache; with --no_calibration_cache the entry is there but not
    read (computed again), and nothing is written."""
    monkeypatch.setenv("LAYERBENCH_CACHE", str(tmp_path / "cache"))
    flags = ["--model", tiny_model_dir, "--num_samples", "1", "--max_steps", "2", "--perplexity", "False",
             "--prune_method", "angular", "--prune_n", "2", "--calibration_samples", "3", "--warmup", "False",
             "--linear_kernel", "torch"]

    def run(name, *extra):
        assert benchmark.main(flags + ["--output_dir", str(tmp_path / name), *extra]) == 0
        [path] = [p for p in os.listdir(tmp_path / name) if p.endswith(".json")]
        with open(tmp_path / name / path) as f:
            return json.load(f)["prune"]["calibration_products"]["last_token_states"]

    def snapshot():
        root = tmp_path / "cache" / "calibration"
        return sorted((p, os.stat(p).st_mtime_ns) for p in _entries(root))

    assert run("a")["status"] == "computed"
    before = snapshot()
    assert len(before) == 1
    assert run("b", "--no_calibration_cache")["status"] == "computed (cache off)"
    assert snapshot() == before


def test_asvd_column_scales_are_cached_and_give_the_same_factors(tmp_path):
    def run():
        model = tiny_llama(num_layers=4)
        cache = CalibrationCache(str(tmp_path), lambda: model_content_hash(model, None, str(tmp_path)))
        pm = PruneModel(model, None, PruneConfig(method="lowrank", compression_rank=4, lowrank_method="asvd"),
                        _calibration(), cache)
        pm.apply()
        return pm
    first, second = run(), run()
    assert [_products(pm) for pm in (first, second)] == [{"asvd_column_scales": "computed"},
                                                         {"asvd_column_scales": "cached"}]
    assert first.compressor.column_scales.keys() == second.compressor.column_scales.keys()
    assert all(torch.equal(first.compressor.column_scales[k], second.compressor.column_scales[k])
               for k in first.compressor.column_scales)
    assert [m["relative_error"] for m in second.report["matrices"]] == [m["relative_error"]
                                                                       for m in first.report["matrices"]]
