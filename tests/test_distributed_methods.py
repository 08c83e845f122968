"""The loops methods add, data-parallel on 2 gloo ranks (CPU) against one process: MetaQuant's step,
synthesis (resumed across world sizes), DynaDFQ's dynamic-width training and the codec's R–D training.

One launch of tests/ddp_methods_worker.py runs all four (tiny models, a few steps each), and one process
runs the same as the reference; the tests below read what each rank saved.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from test_codec import TINY
from test_distributed import single, two_ranks

WORKER = str(Path(__file__).with_name("ddp_methods_worker.py"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("ddp-methods")
    photos, one, two = root / "photos", root / "one", root / "two"
    for folder in (photos, one, two):
        folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(photos / f"p{i}.png")
    (root / "tiny_codec.py").write_text(TINY)
    args = (str(root / "tiny_codec.py"), str(photos))
    single(str(one), *args, worker=WORKER)
    shutil.copy(one / "pool.interrupted.npz", two / "pool.partial.npz")  # one process stopped after batch 1
    shutil.copytree(one / "metaquant-checkpoint", two / "metaquant-checkpoint")  # ... and after MetaQuant's step 2
    two_ranks(str(two), *args, worker=WORKER)
    reference = torch.load(one / "rank0.pt", weights_only=False)
    ranks = [torch.load(two / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert reference["world"] == 1 and [r["world"] for r in ranks] == [2, 2]
    return reference, ranks, two


def assert_same(a, b, **tolerance):
    """Nested dicts/tuples of tensors equal (exactly unless a tolerance is given)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k], **tolerance)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y, **tolerance)
    else:
        torch.testing.assert_close(a, b, **(tolerance or {"atol": 0, "rtol": 0}))


def test_metaquant_phi_and_per_weight_state_agree_across_ranks_and_with_one_process(runs):
    reference, ranks, _ = runs
    mq = [r["metaquant"] for r in ranks]
    assert mq[0]["steps"] == reference["metaquant"]["steps"] == 4
    for key in ("model", "phi", "layers"):  # φ, W, g_Ŵ, W̃ and the LSTM state: the same on both ranks ...
        assert_same(mq[0][key], mq[1][key])
        assert_same(mq[0][key], reference["metaquant"][key], atol=1e-5, rtol=1e-4)  # ... and the full batch's
    assert reference["metaquant"]["phi"]  # φ exists and was trained (it moved from the seed's init)
    for r in ranks:  # stopped by one process after step 2, finished by two ranks: the uninterrupted run's state
        resumed = r["metaquant_resumed"]
        assert resumed["steps"] == 4 and resumed["steps_taken_here"] == 2
        for key in ("model", "phi", "layers"):
            assert_same(resumed[key], reference["metaquant"][key], atol=1e-5, rtol=1e-4)
    for name in ("meta_loss", "meta_grad_norm"):  # the global batch's values, not rank 0's
        got = [r.get(name) for r in mq[0]["records"]]
        assert got == pytest.approx([r.get(name) for r in reference["metaquant"]["records"]], rel=1e-4)
        assert got[-1] is not None and got[-1] > 0


def test_synthesis_resumed_on_two_ranks_gives_the_pool_of_one_uninterrupted_process(runs):
    reference, ranks, _ = runs
    for r in ranks:
        s = r["synthesis"]
        assert s["checkpoint_batches"] == 4 and s["ranks"] == 2  # rank 0's checkpoint holds every batch
        np.testing.assert_array_equal(s["labels"], reference["synthesis"]["labels"])
        np.testing.assert_allclose(s["images"], reference["synthesis"]["images"], atol=1e-6, rtol=0)


def test_dynadfq_dynamic_training_keeps_the_ranks_identical(runs):
    _, ranks, _ = runs
    d = [r["dynadfq"] for r in ranks]
    assert d[0]["steps"] == d[1]["steps"] == 2
    assert_same(d[0]["model"], d[1]["model"])
    assert all(math.isfinite(v) for v in d[0]["losses"]) and d[0]["losses"] == d[1]["losses"]


def test_codec_training_on_two_ranks_writes_one_finished_run(runs):
    _, ranks, two = runs
    docs = [r["codec"]["document"] for r in ranks]
    assert docs[0]["steps"] == 3 and docs[0]["finished"]
    assert docs[0]["held_out_crops"] == docs[1]["held_out_crops"]  # evaluated by each rank on its own weights
    assert ranks[0]["codec"]["written"]["finished"] and ranks[0]["codec"]["written"]["steps"] == 3
    assert all(torch.isfinite(t).all() for t in ranks[0]["codec"]["model"].values() if t.is_floating_point())
    assert (two / "codec" / "checkpoint.pt").is_file() or any((two / "codec").glob("**/checkpoint.pt"))



def test_nproc_2_synthesize_writes_one_pool_and_one_json_document(tmp_path):
    """`qcompile --nproc 2 synthesize` (torchrun underneath): the cores split, as OMP_NUM_THREADS is unset; rank 0
    gathers the batches and alone writes the pool."""
    import json
    import re
    import subprocess
    import sys

    from test_cli import MODEL_SOURCE
    from test_distributed import ENV

    (tmp_path / "net.py").write_text(MODEL_SOURCE)
    cmd = [sys.executable, "-m", "qcompile", "--nproc", "2", "synthesize", "net.py:build", "--input-shape", "1,1,8,8",
           "--images", "12", "--batch-size", "4", "--steps", "2", "--out", "pool.npz", "--json"]
    env = {k: v for k, v in ENV.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, timeout=180, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"OMP_NUM_THREADS unset: \d+ thread\(s\) per rank \(\d+ cores, 2 ranks\)", done.stderr)
    summary = json.loads(done.stdout)  # exactly one document: rank 1 printed nothing
    assert summary["images"] == 12 and [b["batch"] for b in summary["batches"]] == [0, 1, 2]
    with np.load(tmp_path / "pool.npz") as pool:
        assert pool["images"].shape[0] == 12
    assert not (tmp_path / "pool.npz.partial.npz").exists()  # rank 0 removed its checkpoint once the pool was written
