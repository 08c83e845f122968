"""Data-free synthesis: similarity and soft labels on hand examples, the BN-statistics loss, the graph
introspection (plain CNN and a residual net with 1×1 downsample convs), the pool file, resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qcompile.errors import ConfigError, DataError
from qcompile.passes.trace import trace
from qcompile.synthesis import (BNStatisticsLoss, SoftLabelConfig, SynthesisConfig, class_similarity, load_pool,
                                model_parts, sample_labels, save_pool, similar_groups, soft_cross_entropy, synthesize)
from qcompile.synthesis.progress import NullSynthesisProgress
from conftest import TinyBNNet
from qcompile.loading import load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

W = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])  # classes 0 and 1 alike, 2 apart


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyBNNet(classes=3)
    for bn in (model.bn1, model.bn2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_similarity_dot_and_cosine_on_a_hand_example():
    dot = class_similarity(W, "dot")
    assert torch.allclose(dot, torch.tensor([[1.0, 0.9, 0.0], [0.9, 0.82, 0.1], [0.0, 0.1, 1.0]], dtype=torch.float64))
    cos = class_similarity(W, "cosine")
    assert torch.allclose(cos.diagonal(), torch.ones(3, dtype=torch.float64))
    assert cos[0, 1].item() == pytest.approx(0.9 / math.sqrt(0.82))
    assert similar_groups(dot, 1).flatten().tolist() == [1, 0, 1]
    assert similar_groups(dot, 2).tolist() == [[1, 2], [0, 2], [1, 0]]
    with pytest.raises(ConfigError, match="group of 3"):
        similar_groups(dot, 3)


def test_soft_labels_spread_mass_over_the_similar_class():
    s = class_similarity(W)
    plan = sample_labels(s, 6, SoftLabelConfig(group_size=1, hard_fraction=1.0, eps_min=0.3, eps_max=0.3),
                         torch.Generator().manual_seed(0))
    assert sorted(plan.anchors.tolist()) == [0, 0, 1, 1, 2, 2]  # balanced
    neighbour = {0: 1, 1: 0, 2: 1}
    for anchor, row in zip(plan.anchors.tolist(), plan.labels):
        expected = torch.zeros(3)
        expected[anchor], expected[neighbour[anchor]] = 0.7, 0.3
        assert torch.allclose(row, expected)
    assert torch.allclose(plan.entropy, torch.full((6,), -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))))
    easy = sample_labels(s, 6, SoftLabelConfig(hard_fraction=0.0), torch.Generator().manual_seed(0))
    assert torch.equal(easy.labels, F.one_hot(easy.anchors, 3).float()) and not easy.hard.any()
    assert torch.equal(easy.entropy, torch.zeros(6))


def test_group_mass_follows_a_softmax_of_similarity_over_its_spread():
    s = class_similarity(W)
    plan = sample_labels(s, 3, SoftLabelConfig(group_size=2, hard_fraction=1.0, eps_min=0.4, eps_max=0.4),
                         torch.Generator().manual_seed(1))
    row = plan.labels[plan.anchors.tolist().index(0)]
    # class 0: S = 0.9 (class 1), 0 (class 2); tau = their std = 0.45 -> softmax([2, 0])
    pi1 = math.exp(2) / (math.exp(2) + 1)
    assert row.tolist() == pytest.approx([0.6, 0.4 * pi1, 0.4 * (1 - pi1)], abs=1e-6)
    half = sample_labels(s, 4, SoftLabelConfig(hard_fraction=0.5), torch.Generator().manual_seed(2))
    assert int(half.hard.sum()) == 2
    assert (half.labels.argmax(dim=1) == half.anchors).all()  # eps < 0.5: the anchor stays the arg-max
    assert ((half.eps[half.hard] >= 0.1) & (half.eps[half.hard] <= 0.45)).all()


def test_soft_label_config_refuses_an_anchor_that_could_lose():
    with pytest.raises(ConfigError, match="anchor class must stay"):
        SoftLabelConfig(eps_max=0.5)


def test_soft_cross_entropy_matches_torch():
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2, 1, 1, 0])
    assert soft_cross_entropy(logits, F.one_hot(y, 3).float()).item() == pytest.approx(F.cross_entropy(logits, y).item())
    probs = torch.softmax(torch.randn(5, 3), dim=1)
    assert soft_cross_entropy(logits, probs).item() == pytest.approx(F.cross_entropy(logits, probs).item(), rel=1e-6)


def test_bn_statistics_loss_is_the_mean_over_layers_and_decreases():
    model = tiny_model()
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    gm = trace(model).eval()
    parts = model_parts(gm)
    with BNStatisticsLoss(parts.batchnorms) as bns:
        gm(x)
        loss = bns.loss()
    h1 = gm.conv1(x)
    m, v = h1.mean(dim=(0, 2, 3)), h1.var(dim=(0, 2, 3), unbiased=False)
    t1 = ((m - gm.bn1.running_mean) ** 2).mean() + ((v - gm.bn1.running_var) ** 2).mean()
    h2 = gm.conv2(torch.relu(gm.bn1(h1)))
    m, v = h2.mean(dim=(0, 2, 3)), h2.var(dim=(0, 2, 3), unbiased=False)
    t2 = ((m - gm.bn2.running_mean) ** 2).mean() + ((v - gm.bn2.running_var) ** 2).mean()
    assert loss.item() == pytest.approx(((t1 + t2) / 2).item(), rel=1e-5)
    assert not gm.bn1._forward_pre_hooks  # hooks removed on exit
    optimizer = torch.optim.Adam([x], lr=0.1)
    first = None
    with BNStatisticsLoss(parts.batchnorms) as bns:
        for _ in range(100):
            optimizer.zero_grad()
            gm(x)
            loss = bns.loss()
            first = first if first is not None else loss.item()
            loss.backward()
            optimizer.step()
    assert loss.item() < 0.5 * first  # the random running statistics are not all reachable: it levels off near 0.4×


def test_parts_of_a_plain_cnn_and_of_a_residual_net():
    parts = model_parts(trace(load_model(f"{EXAMPLES}/mnist_cnn.py:build")))
    assert len(parts.batchnorms) == 4 and parts.classifier == "16" and parts.classes == 10
    parts = model_parts(trace(load_model(f"{EXAMPLES}/resnet20.py:build")))
    names = [name for name, _ in parts.batchnorms]
    assert len(names) == 21 and "stages.1.0.down.1" in names and "stages.2.0.down.1" in names
    assert parts.classifier == "fc" and tuple(parts.classifier_weight.shape) == (10, 64)


def test_models_that_cannot_be_synthesised_from_say_why():
    with pytest.raises(ConfigError, match="no BatchNorm"):
        model_parts(trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3))))
    with pytest.raises(ConfigError, match="cannot find the classifier"):
        model_parts(trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 3), nn.ReLU())))


def test_resnet_synthesis_runs_at_3x32x32():
    pool = synthesize(load_model(f"{EXAMPLES}/resnet20.py:build"), (3, 32, 32), SynthesisConfig(images=4, batch_size=4, steps=2),
                      mean=(0.49, 0.48, 0.45), std=(0.2, 0.2, 0.2), device="cpu")
    assert pool.images.shape == (4, 3, 32, 32) and pool.labels.shape == (4, 10)
    assert len(pool.provenance["batchnorms"]) == 21
    assert set(pool.provenance["batches"][0]["bns_per_layer"]) == set(pool.provenance["batchnorms"])


def test_pool_round_trip_and_damaged_files(tmp_path):
    config = SynthesisConfig(images=10, batch_size=4, steps=3)
    pool = synthesize(tiny_model(), (1, 8, 8), config, mean=(0.5,), std=(0.25,), classes=["a", "b", "c"], device="cpu")
    assert pool.images.shape == (10, 1, 8, 8) and len(pool.provenance["batches"]) == 3
    save_pool(pool, tmp_path / "pool.npz")
    back = load_pool(tmp_path / "pool.npz")
    for key, value in pool.arrays().items():
        if key != "provenance":
            assert np.array_equal(value, back.arrays()[key]), key
    assert back.provenance == pool.provenance and back.classes == ["a", "b", "c"] and back.std == (0.25,)
    assert np.allclose(back.labels.sum(axis=1), 1) and (back.labels.argmax(axis=1) == back.anchors).all()
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_pool(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DataError, match="lacks images"):
        load_pool(tmp_path / "other.npz")
    with pytest.raises(DataError, match="does not exist"):
        load_pool(tmp_path / "missing.npz")


class _StopAt(NullSynthesisProgress):
    def __init__(self, batch: int):
        self.batch = batch

    def start_batch(self, batch: int, batches: int, steps: int) -> None:
        if batch == self.batch:
            raise KeyboardInterrupt


def test_an_interrupted_synthesis_resumes_to_the_same_pool(tmp_path):
    config = SynthesisConfig(images=9, batch_size=4, steps=4, seed=3)
    whole = synthesize(tiny_model(), (1, 8, 8), config, device="cpu")
    checkpoint = tmp_path / "pool.npz.partial.npz"
    with pytest.raises(KeyboardInterrupt):
        synthesize(tiny_model(), (1, 8, 8), config, device="cpu", checkpoint=checkpoint, progress=_StopAt(2))
    with pytest.raises(ConfigError, match="--resume"):
        synthesize(tiny_model(), (1, 8, 8), config, device="cpu", checkpoint=checkpoint)
    with pytest.raises(ConfigError, match="config"):
        synthesize(tiny_model(), (1, 8, 8), SynthesisConfig(images=9, batch_size=4, steps=5, seed=3), device="cpu",
                   checkpoint=checkpoint, resume=True)
    resumed = synthesize(tiny_model(), (1, 8, 8), config, device="cpu", checkpoint=checkpoint, resume=True)
    assert np.array_equal(resumed.images, whole.images) and np.array_equal(resumed.labels, whole.labels)
    assert [r["bns"] for r in resumed.provenance["batches"]] == [r["bns"] for r in whole.provenance["batches"]]


def test_diagnostics_on_hand_examples():
    from qcompile.synthesis import confusion_matrix, similarity_confusion_spearman, spearman, wasserstein_1d

    assert confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3).tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10))  # ties: ranks 1, 2.5, 2.5, 4
    s = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.5], [0.1, 0.5, 1.0]])
    c = np.array([[50, 8, 0], [6, 50, 2], [1, 3, 50]])  # pair sums: (0,1) 14, (0,2) 1, (1,2) 5 — same order as S
    assert similarity_confusion_spearman(s, c) == pytest.approx(1.0)
    assert wasserstein_1d([0.0, 1.0], [0.0, 1.0]) == 0.0
    assert wasserstein_1d([0.0], [2.5]) == pytest.approx(2.5)
    assert wasserstein_1d([0.0, 1.0], [1.0, 2.0]) == pytest.approx(1.0)
    assert wasserstein_1d([0.0, 0.0, 3.0], [1.0]) == pytest.approx((2 * 1 + 2) / 3)
