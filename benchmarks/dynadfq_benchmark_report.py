"""The analysis of ``dynadfq_benchmark.py``: criteria A–E of dynadfq.md §9, tables, PNGs, one summary JSON.

Reads the cached runs (``benchmarks/results/dynadfq_benchmark/*.json``, per-image arrays under
``benchmarks/.cache/``) and writes ``benchmarks/results/dynadfq_benchmark.json`` plus three PNGs beside it:
``dynadfq_pareto.png`` (accuracy vs mean BitOPs), ``dynadfq_bits_hist.png`` (per-image mean width),
``dynadfq_entropy_hist.png`` (float-model entropy, pools vs real test). Missing runs are reported as missing.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

import common
import dynadfq_benchmark_runs as runs

PARETO, BITS_HIST, ENTROPY_HIST = "dynadfq_pareto.png", "dynadfq_bits_hist.png", "dynadfq_entropy_hist.png"


def _records(setup) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(setup.results.glob("*.json")) if "-s" in p.stem}


def _mean_sd(values: list[float]) -> dict[str, Any]:
    pct = [100 * v for v in values]
    return {"mean": statistics.fmean(pct) if pct else None, "sd": statistics.stdev(pct) if len(pct) > 1 else None,
            "n": len(pct), "values": pct}


def _group(records: dict[str, dict]) -> dict[str, dict]:
    """Accuracy over seeds per run key without its seed."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for key, r in records.items():
        groups[key.rsplit("-s", 1)[0]].append(r)
    return {k: {**_mean_sd([r["accuracy"] for r in rs]), "mean_bitops": statistics.fmean(r["mean_bitops"] for r in rs)}
            for k, rs in groups.items()}


def _float_test(setup) -> tuple[np.ndarray, np.ndarray]:
    """Float model's predictions and entropies (nats) on the real test images."""
    import torch

    from qcompile.synthesis.labels import entropy

    model = runs._float(setup)
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(setup.test_inputs())), dim=1)
    return p.argmax(dim=1).numpy(), entropy(p).numpy()


def _interp_static(points: list[tuple[float, float]], bitops: float) -> float | None:
    """The static curve (piecewise linear in BitOPs) at ``bitops``; None outside its range."""
    xs, ys = zip(*sorted(points))
    return float(np.interp(bitops, xs, ys)) if xs[0] <= bitops <= xs[-1] else None


def _most_frequent_config_accuracy(setup, key: str, widths: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, MBitOPs) of every test image at the selector's most frequent configuration — the same weights
    without a selector (the static fallback export); the MBitOPs still count the selector, as the bundle's do."""
    from qcompile.runtime import load

    session = load(setup.cache / f"{key}.qcz", providers="cpu", intra_op_threads=1)
    configs, counts = np.unique(widths, axis=0, return_counts=True)
    config = np.searchsorted(session.candidates, configs[counts.argmax()])
    x = setup.test_inputs()
    pred = np.concatenate([session.run_config(x[i:i + 256], config).argmax(axis=1) for i in range(0, len(x), 256)])
    return float((pred == y).mean()), float(session.bitops(configs[counts.argmax()][None])[0] / 1e6)


def _permutation_p(similarity: np.ndarray, confusion: np.ndarray, rho: float, draws: int = 10_000) -> float:
    """One-sided p of Spearman ≥ ``rho`` with the 45 pairs' confusion counts shuffled (seed 0)."""
    from qcompile.synthesis.diagnostics import spearman

    upper = np.triu_indices(len(similarity), k=1)
    s, c = similarity[upper], (confusion + confusion.T)[upper]
    rng = np.random.default_rng(0)
    hits = sum(spearman(s, rng.permutation(c)) >= rho for _ in range(draws))
    return (hits + 1) / (draws + 1)


def _main_curve(key: str) -> bool:
    """The selector settings on pool (e) at the default selector size (the dynamic curve)."""
    return key.startswith("dynadfq-dyn-") and "-h" not in key


def _spearman(a, b) -> float:
    from qcompile.synthesis.diagnostics import spearman

    return spearman(np.asarray(a, float), np.asarray(b, float))


def _selector_analysis(setup, key: str, y: np.ndarray, fp_entropy: np.ndarray, w2_pred: np.ndarray | None) -> dict:
    """Criterion E and the selector's precision/recall against per-image sensitivity, from a dynamic run."""
    z = np.load(setup.cache / f"{key}.npz")
    bits = z["widths"].mean(axis=1)
    low = bits < bits.mean()
    survives = z["pred_all_min"] == z["pred_all_max"]  # prediction unchanged with every layer at the lowest width
    out = {"mean_bits": float(bits.mean()), "spearman_bits_fp_entropy": _spearman(bits, fp_entropy),
           "low_share": float(low.mean()), "survive_share": float(survives.mean()),
           "precision": float(survives[low].mean()) if low.any() else None,
           "precision_lift": float(survives[low].mean() / survives.mean()) if low.any() and survives.any() else None,
           "recall": float(low[survives].mean()) if survives.any() else None,
           "accuracy_selected": float((z["pred"] == y).mean()),
           "accuracy_shuffled": float((z["pred_shuffled"] == y).mean())}
    out["accuracy_most_frequent_config"], out["mbitops_most_frequent_config"] = \
        _most_frequent_config_accuracy(setup, key, z["widths"], y)
    if w2_pred is not None:
        wrong = w2_pred != y
        out.update(bits_where_w2a2_wrong=float(bits[wrong].mean()), bits_where_w2a2_right=float(bits[~wrong].mean()))
    return out


def write(setup) -> Path:
    from qcompile.synthesis import load_pool
    from qcompile.synthesis.diagnostics import confusion_matrix, similarity_confusion_spearman, wasserstein_1d

    started, load_before = time.perf_counter(), common.load_average()
    records, y = _records(setup), setup.splits.test.y
    groups = _group(records)
    fp_pred, fp_entropy = _float_test(setup)
    pools = {name: load_pool(setup.pool_path(name)) for name in runs.POOLS if setup.pool_path(name).exists()}
    pool_info = {name: {**json.loads((setup.results / f"pool-{name}.json").read_text()),
                        "w1_entropy_vs_real": wasserstein_1d(p.pred_entropy, fp_entropy)}
                 for name, p in pools.items() if (setup.results / f"pool-{name}.json").exists()}
    arms = {w: {s: groups.get(f"{s}-{w}") for s in runs.SOURCES} for w in ("W4A4", "W3A3", "W2A4")}
    criteria: dict[str, Any] = {}
    w3 = {s: (arms["W3A3"][s] or {}).get("mean") for s in runs.SOURCES}
    if all(v is not None for v in w3.values()):
        criteria["A"] = {"W3A3": w3, "pass": bool(w3["dynadfq"] >= w3["onehot"] >= w3["bn"] > w3["noise"] + 10
                                                   and w3["real"] - w3["dynadfq"] <= 2.0)}
    w4 = {s: (arms["W4A4"][s] or {}).get("mean") for s in ("real", "dynadfq")}
    if None not in w4.values():
        criteria["goal_W4A4_within_1pt"] = {"gap": w4["real"] - w4["dynadfq"], "pass": w4["real"] - w4["dynadfq"] <= 1.0}
    if "dynadfq" in pools:
        similarity = np.asarray(pools["dynadfq"].provenance["similarity"])
        confusion = confusion_matrix(y, fp_pred, 10)
        rho = similarity_confusion_spearman(similarity, confusion)
        criteria["C"] = {"spearman": rho, "permutation_p": _permutation_p(similarity, confusion, rho)}
        criteria["C"]["pass"] = rho > 0 and criteria["C"]["permutation_p"] < 0.05
    if {"dynadfq", "onehot"} <= set(pool_info):
        d = {n: pool_info[n]["w1_entropy_vs_real"] for n in ("bn", "onehot", "dynadfq", "random") if n in pool_info}
        criteria["D"] = {"w1": d, "real_test_entropy_mean": float(fp_entropy.mean()),
                         "pass": d["dynadfq"] <= 0.5 * d["onehot"]}  # "far more overlap": at most half the distance
    static = {b: groups.get(f"dynadfq-W{b}A{b}") for b in (2, 3, 4)}
    static_points = [(g["mean_bitops"], g["mean"]) for g in static.values() if g]
    dynamic = {k: g for k, g in groups.items() if "-dyn-" in k}
    for k, g in dynamic.items():
        g["static_at_same_bitops"] = _interp_static(static_points, g["mean_bitops"]) if len(static_points) > 1 else None
    main = [k for k in dynamic if _main_curve(k)]
    if main and len(static_points) == 3:
        criteria["B"] = {"above_static": {k: dynamic[k]["mean"] >= (dynamic[k]["static_at_same_bitops"] or 1e9)
                                          for k in main}}
        if "onehot-dyn-T3-l10" in dynamic and "dynadfq-dyn-T3-l10" in dynamic:
            criteria["B"]["e_beats_d_at_T3_l10"] = dynamic["dynadfq-dyn-T3-l10"]["mean"] > dynamic["onehot-dyn-T3-l10"]["mean"]
        criteria["B"]["pass"] = all(criteria["B"]["above_static"].values()) and criteria["B"].get("e_beats_d_at_T3_l10", False)
    w2_path = setup.cache / "dynadfq-W2A2-s0.npz"
    w2_pred = np.load(w2_path)["pred"] if w2_path.exists() else None
    selectors = {k: _selector_analysis(setup, k, y, fp_entropy, w2_pred) for k in records if "-dyn-" in k
                 and (setup.cache / f"{k}.npz").exists()}
    e = [s for k, s in selectors.items() if _main_curve(k) and "bits_where_w2a2_wrong" in s]
    if e:
        criteria["E"] = {"pass": all(s["spearman_bits_fp_entropy"] > 0 and s["bits_where_w2a2_wrong"] >
                                     s["bits_where_w2a2_right"] for s in e)}
    payload = {"float_test_acc": setup.float_acc, "budget": {"steps": runs.STEPS, "lr": runs.LR, "kd_alpha": runs.KD_ALPHA,
               "batch": runs.BATCH}, "pools": pool_info, "arms": arms, "static_pool_e": static, "dynamic": dynamic,
               "selectors": selectors, "criteria": criteria}
    _plots(setup, static, dynamic, groups, records, pools, fp_entropy)
    args = type("Args", (), {"out": None if not setup.quick else common.RESULTS_DIR / "dynadfq_benchmark_quick.json",
                             "quick": setup.quick})
    path = common.write_results("dynadfq_benchmark", args, payload, started, load_before)
    common.finish(path, render)
    return path


def _cell(g: dict | None) -> str:
    if not g or g.get("mean") is None:
        return "—"
    return f"{g['mean']:.2f}" + (f" ± {g['sd']:.2f}" if g.get("sd") is not None else "") + f" ({g['n']})"


def render(record: dict) -> str:
    out = ["Data sources (real MNIST test acc %, mean ± sd over seeds (n)):", common.markdown_table(
        ["widths", *runs.SOURCES], [[w, *[_cell(record["arms"][w][s]) for s in runs.SOURCES]] for w in record["arms"]])]
    out += ["", "Pools:", common.markdown_table(
        ["pool", "seconds", "FP entropy mean", "W1 to real test", "agreement"],
        [[n, p["seconds"], f"{p['summary']['pred_entropy_mean']:.3f}", f"{p['w1_entropy_vs_real']:.3f}",
          p["summary"]["agreement"]] for n, p in record["pools"].items()])]
    rows = [[f"static W{b}A{b}", f"{g['mean_bitops'] / 1e6:.1f}", _cell(g), "—"] for b, g in record["static_pool_e"].items() if g]
    rows += [[k, f"{g['mean_bitops'] / 1e6:.1f}", _cell(g), "—" if g["static_at_same_bitops"] is None
              else f"{g['static_at_same_bitops']:.2f}"] for k, g in sorted(record["dynamic"].items())]
    out += ["", "Dynamic vs static (pool e unless named):", common.markdown_table(
        ["variant", "mean MBitOPs", "acc %", "static curve at same BitOPs"], rows)]
    out += ["", "Selectors:", common.markdown_table(
        ["run", "mean bits", "ρ(bits, FP entropy)", "bits W2A2 wrong / right", "precision", "recall", "survive share",
         "acc selected / shuffled / most frequent config"],
        [[k, f"{s['mean_bits']:.2f}", f"{s['spearman_bits_fp_entropy']:.3f}",
          f"{s.get('bits_where_w2a2_wrong', float('nan')):.2f} / {s.get('bits_where_w2a2_right', float('nan')):.2f}",
          f"{s['precision']:.3f}" if s["precision"] is not None else "—",
          f"{s['recall']:.3f}" if s["recall"] is not None else "—", f"{s['survive_share']:.3f}",
          f"{100 * s['accuracy_selected']:.2f} / {100 * s['accuracy_shuffled']:.2f} / "
          f"{100 * s['accuracy_most_frequent_config']:.2f}"] for k, s in record["selectors"].items()])]
    out += ["", "Criteria:", json.dumps(record["criteria"], indent=1)]
    return "\n".join(out)


def _plots(setup, static, dynamic, groups, records, pools, fp_entropy) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    where = setup.results if setup.quick else setup.results.parent
    fig, ax = plt.subplots(figsize=(6, 4))
    pts = sorted((g["mean_bitops"] / 1e6, g["mean"], g["sd"] or 0) for g in static.values() if g)
    if pts:
        ax.errorbar(*zip(*pts), fmt="o-", color="k", label="static W2A2/W3A3/W4A4 (pool e)", capsize=3)
    real = sorted((g["mean_bitops"] / 1e6, g["mean"]) for k, g in groups.items() if k.startswith("real-W") and
                  k.split("-")[1] in ("W3A3", "W4A4"))
    if real:
        ax.plot(*zip(*real), "s--", color="gray", label="static, real-data QAT")
    for test, style, label in ((_main_curve, "o", "dynamic, pool e"),
                               (lambda k: k.startswith("onehot-dyn-"), "^", "dynamic, pool d"),
                               (lambda k: k.startswith("random-dyn-"), "v", "dynamic, random-class labels"),
                               (lambda k: "-h" in k, "x", "dynamic, pool e, smaller selector")):
        d = [(g["mean_bitops"] / 1e6, g["mean"]) for k, g in dynamic.items() if test(k)]
        if d:
            ax.plot(*zip(*d), style, label=label, ms=7)
    ax.set(xlabel="mean MBitOPs per image", ylabel="real MNIST test accuracy %", title="DynaDFQ on the MNIST CNN")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(where / PARETO, dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in sorted(k for k in records if _main_curve(k) and k.endswith("-s0")):
        z = np.load(setup.cache / f"{k}.npz")
        ax.hist(z["widths"].mean(axis=1), bins=np.arange(2, 4.01, 0.2) - 0.1, histtype="step", label=k[12:-3], lw=1.5)
    ax.set(xlabel="mean width over the dynamic layers (bits)", ylabel="real test images")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(where / BITS_HIST, dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 2.3, 24)
    ax.hist(fp_entropy, bins=bins, density=True, histtype="step", color="k", lw=2, label="real test")
    for name in ("bn", "onehot", "dynadfq", "random"):
        if name in pools:
            ax.hist(pools[name].pred_entropy, bins=bins, density=True, histtype="step", lw=1.2, label=f"pool {name}")
    ax.set(xlabel="float model's prediction entropy (nats)", ylabel="density", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(where / ENTROPY_HIST, dpi=90)
    plt.close(fig)
