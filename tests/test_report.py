"""``qcompile report`` and :mod:`qcompile.report` on synthetic run directories (no training).

Two labels × three seeds of five epochs, with values chosen so the statistics can be written out by
hand with :mod:`statistics`; plus the step-record bookkeeping behind MetaQuant's logged meta_gain.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from qcompile.cli.main import cli
from qcompile.report import merge_steps, summarise_steps
from qcompile.run_dir import write_history

LABELS = {"ste sgd": [0.50, 0.60, 0.70], "metaquant/multifc": [0.55, 0.65, 0.80]}  # seed offsets
EPOCHS = 5


def acc(label: str, seed: int, epoch: int) -> float:
    return round(LABELS[label][seed] / 2 + 0.05 * epoch, 6)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("report")
    dirs = []
    for i, label in enumerate(LABELS):
        for seed in range(3):
            run = root / f"arm{i}" / f"seed{seed}"
            history = [{"epoch": e, "train_loss": 2.0 - 0.1 * e - seed / 10, "train_acc": None,
                        "test_acc": acc(label, seed, e), "test_loss": 1.0, "lr": 0.01, "seconds": 1.0}
                       for e in range(EPOCHS)]
            steps = [{"step": s, "epoch": 0, "segment": 0, "meta_gain": 1.0 + s / 10 + seed} for s in range(1, 4)]
            write_history(run, history, label=label, steps=steps)
            dirs.append(run)
    return dirs


def invoke(*args, expect: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == expect, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return result


def test_report_json_statistics_equal_hand_computed_ones(runs, tmp_path):
    png = tmp_path / "curves.png"
    doc = json.loads(invoke("report", *runs, "--out", png, "--last-k", "2", "--json").stdout)
    assert doc["ok"] and doc["metric"] == "test_acc" and doc["out"] == str(png)
    groups = {g["label"]: g for g in doc["groups"]}
    assert list(groups) == list(LABELS)
    for label, g in groups.items():
        curves = [[acc(label, s, e) for e in range(EPOCHS)] for s in range(3)]
        finals = [c[-1] for c in curves]
        pooled = [v for c in curves for v in c[-2:]]
        assert g["runs"] == 3 and g["points"] == EPOCHS
        assert g["final"]["mean"] == pytest.approx(statistics.mean(finals))
        assert g["final"]["std"] == pytest.approx(statistics.stdev(finals))
        assert g["last_k"] == pytest.approx({"k": 2, "mean": statistics.mean(pooled), "std": statistics.stdev(pooled)})
        assert g["best"]["mean"] == pytest.approx(statistics.mean(finals))  # curves rise: best = last
        assert g["best"]["overall"] == pytest.approx(max(finals))


def test_report_writes_a_valid_png_atomically(runs, tmp_path):
    png = tmp_path / "curves.png"
    out = invoke("report", *runs, "--out", png).stdout
    assert "ste sgd" in out and "metaquant/multifc" in out and "last 3" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as image:
        image.verify()
    assert not list(tmp_path.glob(".*.tmp"))


def test_group_by_parent_and_run(runs):
    by_parent = json.loads(invoke("report", *runs, "--group-by", "parent", "--json").stdout)
    assert [g["label"] for g in by_parent["groups"]] == ["arm0", "arm1"]
    by_run = json.loads(invoke("report", *runs[:2], "--group-by", "run", "--json").stdout)
    assert [g["runs"] for g in by_run["groups"]] == [1, 1] and by_run["groups"][0]["final"]["std"] == 0.0


def test_loss_metric_is_best_when_lowest(runs):
    doc = json.loads(invoke("report", *runs[:3], "--metric", "train_loss", "--json").stdout)
    assert doc["groups"][0]["best"]["overall"] == pytest.approx(2.0 - 0.4 - 0.2)


def test_step_metric_is_plotted_against_the_step(runs, tmp_path):
    png = tmp_path / "gain.png"
    doc = json.loads(invoke("report", *runs[:3], "--metric", "meta_gain", "--out", png, "--json").stdout)
    g = doc["groups"][0]
    assert g["points"] == 3 and g["final"]["mean"] == pytest.approx(statistics.mean([1.3, 2.3, 3.3]))
    assert png.is_file()


def test_errors_name_the_fix(runs, tmp_path):
    unknown = invoke("report", *runs[:1], "--metric", "nope", expect=2)
    assert "no run recorded 'nope'" in unknown.stderr and "test_acc" in unknown.stderr
    assert "history.json" in invoke("report", tmp_path, expect=2).stderr
    assert ".png" in invoke("report", *runs[:1], "--out", tmp_path / "x.jpg", expect=2).stderr


# ----------------------------------------------------------------------------- step records
def records(n: int, start: float = 0.0) -> list[dict]:
    return [{"step": s, "epoch": 0, "meta_gain": start + s} for s in range(1, n + 1)]


def test_merge_steps_numbers_segments_and_replaces_a_resumed_one():
    compiled = merge_steps([], records(3), resume=False)
    assert [(r["segment"], r["step"]) for r in compiled] == [(0, 1), (0, 2), (0, 3)]
    tuned = merge_steps(compiled, records(2, 10), resume=False)
    assert [(r["segment"], r["step"]) for r in tuned] == [*[(0, s) for s in (1, 2, 3)], (1, 4), (1, 5)]
    resumed = merge_steps(tuned, records(4, 10), resume=True)  # checkpoint restored the 2 steps of segment 1
    assert [(r["segment"], r["step"]) for r in resumed] == [*[(0, s) for s in (1, 2, 3)], *[(1, s) for s in (4, 5, 6, 7)]]
    crashed = merge_steps(compiled, records(4, 10), resume=True)  # segment 1 never got recorded
    assert [r["segment"] for r in crashed] == [0, 0, 0, 1, 1, 1, 1]


def test_summarise_steps_first_last_and_range():
    s = summarise_steps([{"step": 1, "epoch": 0, "meta_gain": 2.0}, {"step": 2, "epoch": 0, "meta_gain": 1.0,
                                                                    "meta_loss": 0.5}])
    assert s == {"meta_gain": {"first": 2.0, "last": 1.0, "mean": 1.5, "min": 1.0, "max": 2.0, "count": 2},
                 "meta_loss": {"first": 0.5, "last": 0.5, "mean": 0.5, "min": 0.5, "max": 0.5, "count": 1}}


def test_report_help_lists_its_options():
    out = invoke("report", "--help").stdout
    assert all(flag in out for flag in ("--out", "--metric", "--last-k", "--group-by", "--json"))
