"""bench/sweep_exit.py on a tiny saved model: the grid, the CSV/JSON/PNGs, the best cell and the greedy check."""
import glob
import json
import os

import pandas as pd
import pytest

from tests.conftest import ROOT


@pytest.fixture
def sweep_exit(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    import sweep_exit
    return sweep_exit


def _png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # a whole sweep with plots: 5 s
@pytest.mark.parametrize("extra, confidences", [(["--exit_adapter", "linear"], [None]),
                                                (["--draft_confidences", "0.5"], [None, 0.5])])
def test_sweep_writes_grid_csv_json_and_contours(sweep_exit, tiny_model_dir, tmp_path, capsys, extra, confidences):
    sweep_exit.main(["--model", tiny_model_dir, "--exit_layers", "3", "1", "--speculations", "1", "3",
                     "--samples", "1", "--max_tokens", "6", "--calibration_samples", "2", "--out", str(tmp_path),
                     *extra])
    [csv] = glob.glob(str(tmp_path / "*.csv"))
    frame = pd.read_csv(csv)
    expected = [(E, d, c) for E in (1, 3) for d in (1, 3) for c in confidences]
    assert [(r.exit_layer, r.num_speculations, None if pd.isna(r.draft_confidence) else r.draft_confidence)
            for r in frame.itertuples()] == expected
    assert frame["greedy_equal_to_autoregressive"].all()  # self-speculative greedy output is the model's own
    assert ((frame["acceptance"] >= 0) & (frame["acceptance"] <= 1)).all() and (frame["speedup"] > 0).all()
    doc = json.load(open(csv[:-4] + ".json"))
    best = frame.loc[frame["speedup"].idxmax()]
    assert doc["best"]["speedup"] == pytest.approx(best["speedup"]) and doc["all_greedy_equal"] is True
    assert sorted(doc["exit_adapters"]) == (["1", "3"] if extra[0] == "--exit_adapter" else [])
    assert all(_png(tmp_path / doc["files"][k]) for k in ("speedup_png", "acceptance_png"))
    out = capsys.readouterr().out
    assert f"best cell: E={int(best['exit_layer'])} d={int(best['num_speculations'])}" in out
    assert f"equal to autoregressive in {len(expected)}/{len(expected)} cells" in out


def test_single_row_grid_is_drawn_as_points(sweep_exit, tiny_model_dir, tmp_path):
    sweep_exit.main(["--model", tiny_model_dir, "--exit_layers", "2", "--speculations", "2", "4",
                     "--samples", "1", "--max_tokens", "4", "--out", str(tmp_path)])
    assert len(glob.glob(str(tmp_path / "*_speedup.png"))) == 1


@pytest.mark.parametrize("argv, message", [
    (["--exit_layers", "0"], "error: argument --exit_layers: must be >= 1, got 0"),
    (["--draft_confidences", "1.5"], "error: argument --draft_confidences: must be in (0, 1), got 1.5"),
    (["--exit_adapter", "mlp"], "error: argument --exit_adapter: invalid choice: 'mlp' (choose from 'none', 'linear')"),
])
def test_bad_flags_are_one_line(sweep_exit, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        sweep_exit.parse(argv)
    assert exc.value.code == 2 and capsys.readouterr().err.strip() == message


def test_exit_layer_beyond_the_model_is_refused(sweep_exit, tiny_model_dir, tmp_path):
    from layerbench.errors import UsageError
    with pytest.raises(UsageError, match="--exit_layers 6: must be below the model's 6 layers"):
        sweep_exit.main(["--model", tiny_model_dir, "--exit_layers", "2", "6", "--samples", "1",
                         "--out", str(tmp_path)])
