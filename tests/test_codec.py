"""The learned codec's compiler side: the bottleneck pass, the quantization modes, the entropy model,
the CDF tables, and a tiny train → export whose ONNX graphs match PyTorch."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from qcompile.cli.main import cli
from qcompile.codec import Bottleneck, QuantizedBottleneck, bottleneck_of, prepare
from qcompile.codec.bottleneck import NODE_ID
from qcompile.codec.entropy import FactorizedDensity
from qcompile.codec.tables import build_tables, quantize_pmf
from qcompile.errors import ConfigError
from qcompile.methods.universal.ops import soft_round, soft_round_conditional_mean
from qcompile.runtime.dither import dither_offsets

TINY = '''
from torch import nn
from qcompile.codec import GDN, Bottleneck


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 6, 5, 2, 2), GDN(6), nn.Conv2d(6, 4, 5, 2, 2))
        self.bottleneck = Bottleneck(4)
        self.dec = nn.Sequential(nn.ConvTranspose2d(4, 6, 5, 2, 2, 1), GDN(6, inverse=True),
                                 nn.ConvTranspose2d(6, 3, 5, 2, 2, 1))

    def forward(self, x):
        return self.dec(self.bottleneck(self.enc(x)))


def build():
    return Tiny()


class NoMarker(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.conv(x)
'''


class Small(nn.Module):
    def __init__(self, marker: bool = True, markers: int = 1):
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 4, stride=4)
        self.marks = nn.ModuleList([Bottleneck(4) for _ in range(markers if marker else 0)])
        self.dec = nn.ConvTranspose2d(4, 3, 4, stride=4)

    def forward(self, x):
        y = self.enc(x)
        for m in self.marks:
            y = m(y)
        return self.dec(y)


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------- the pass
def test_pass_inserts_the_node_at_the_marker():
    torch.manual_seed(0)
    gm = prepare(Small(), "un")
    calls = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert [n.target for n in calls] == ["enc", "codec_bottleneck", "dec"]
    assert calls[1].args[0] is calls[0]  # the node reads the encoder's output
    assert not any(isinstance(m, Bottleneck) for m in gm.modules())
    report = gm.meta["qcompile.reports"][-1]
    assert report["pass"] == "InsertBottleneck" and report["channels"] == 4
    x_hat, likelihoods = gm.eval()(torch.rand(2, 3, 8, 8))
    assert x_hat.shape == (2, 3, 8, 8) and likelihoods.shape == (2, 4, 2, 2)


def test_pass_at_a_named_node():
    gm = prepare(Small(marker=False), "un", node="enc", channels=4)
    calls = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    assert calls == ["enc", "codec_bottleneck", "dec"]
    with pytest.raises(ConfigError, match="needs its channel count"):
        prepare(Small(marker=False), "un", node="enc")
    with pytest.raises(ConfigError, match="no fx node named 'nope'"):
        prepare(Small(marker=False), "un", node="nope", channels=4)


@pytest.mark.parametrize("markers, found", [(0, "no Bottleneck marker"), (2, "2 Bottleneck markers")])
def test_pass_needs_exactly_one_marker(markers, found):
    with pytest.raises(ConfigError, match=found) as info:
        prepare(Small(markers=markers), "un")
    assert "Bottleneck(M)" in info.value.hint


# ----------------------------------------------------------------------------- the modes
def _y(seed=0):
    return torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(seed)) * 3


def test_un_training_adds_fresh_noise_and_eval_rounds():
    b = QuantizedBottleneck(4, "un").train()
    y = _y()
    first, second = b(y)[0], b(y)[0]
    assert (first - y).abs().max() < 0.5 and not torch.equal(first, second)
    b.eval()
    y_hat, likelihoods = b(y)
    assert torch.equal(y_hat, torch.round(y))
    assert torch.allclose(likelihoods, b.density(torch.round(y)))


def test_uq_eval_is_the_shared_dither_with_uniform_error():
    b = QuantizedBottleneck(4, "uq", seed=7, levels=16).eval()
    y = _y(1)
    y_hat, _ = b(y)
    u = torch.from_numpy(dither_offsets(7, NODE_ID, (1, 4, 16, 16), 16))  # what the runtime regenerates
    assert torch.equal(y_hat, torch.round(y - u) + u)
    assert torch.equal(y_hat[0], y_hat[0]) and torch.equal(b(y)[0], y_hat)  # deterministic
    error = (y_hat - y).flatten()
    assert error.abs().max() <= 0.5
    # the evaluation error has the training noise's distribution: uniform on (-1/2, 1/2)
    big = torch.randn(1, 4, 128, 128, generator=torch.Generator().manual_seed(3)) * 5
    eval_error = (b(big)[0] - big).flatten()
    train_error = (b.train()(big)[0] - big).flatten()
    for e in (eval_error, train_error):
        assert abs(float(e.mean())) < 0.01 and abs(float(e.var()) - 1 / 12) < 0.003
        histogram = torch.histc(e, bins=10, min=-0.5, max=0.5) / e.numel()
        assert (histogram - 0.1).abs().max() < 0.01
    assert abs(float(np.corrcoef(eval_error.numpy(), big.flatten().numpy())[0, 1])) < 0.02


def test_sr_channel_and_its_hard_limit():
    b = QuantizedBottleneck(4, "uq-sr", seed=1).train()
    b.alpha.fill_(3.0)
    y = _y(2)
    torch.manual_seed(5)
    y_hat, _ = b(y)
    torch.manual_seed(5)
    u = torch.rand_like(y) - 0.5
    assert torch.allclose(y_hat, soft_round_conditional_mean(soft_round(y, 3.0) + u, 3.0), atol=1e-5)
    b.eval().alpha.fill_(1e5)  # α → ∞: the dithered channel becomes hard rounding
    assert torch.allclose(b(y)[0], torch.round(y))


def test_expected_gradient_reaches_the_encoder():
    b = QuantizedBottleneck(4, "uq-sr").train()
    y = _y(4).requires_grad_()
    _, likelihoods = b(y)
    (-torch.log2(likelihoods).sum()).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- entropy model and tables
def test_likelihoods_sum_to_one_over_the_integers():
    torch.manual_seed(0)
    density = FactorizedDensity(3, init_scale=4.0)
    k = torch.arange(-200, 201, dtype=torch.float32)
    for u in (0.0, 0.3, -0.45):
        p = density.box_likelihood((k + u).reshape(1, 1, -1).expand(1, 3, -1).contiguous())
        assert torch.allclose(p.sum(dim=-1), torch.ones(1, 3), atol=1e-5)


@pytest.mark.parametrize("levels", [0, 4])
def test_cdf_tables_are_valid(levels):
    torch.manual_seed(0)
    density = FactorizedDensity(3, init_scale=3.0)
    t = build_tables(density, levels)
    assert t.cdf.dtype == t.cdf_length.dtype == t.cdf_offset.dtype == np.int32
    assert t.cdf.shape[0] == 3 * (levels or 1)
    for row, length in zip(t.cdf, t.cdf_length):
        valid = row[:length]
        assert valid[0] == 0 and valid[-1] == 1 << 16
        assert (np.diff(valid) >= 1).all()  # every symbol, overflow included, has a count
    assert (t.cdf_offset <= 0).all()


def test_quantize_pmf_keeps_every_symbol():
    counts = quantize_pmf(np.array([1.0 - 1e-6, 1e-6, 0.0, 0.0]))
    assert counts.sum() == 1 << 16 and counts.min() >= 1 and len(counts) == 5


# ----------------------------------------------------------------------------- train -> export, CLI
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(4):
        base = rng.integers(0, 255, (1, 1, 3))
        noise = rng.integers(-20, 20, (48 + 16 * i, 64, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny_codec.py"
    path.write_text(TINY)
    return path


def invoke(*args, expect=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == expect, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_tiny_train_exports_bundles_that_match_pytorch(tmp_path, photos, model_file):
    from qcompile.runtime.container import read_artifact
    from qcompile.runtime.engine import Engine

    out = tmp_path / "run"
    doc = json.loads(invoke("codec", "train", f"{model_file}:build", "--lambda", "0.01", "--steps", "3",
                            "--batch-size", "2", "--crop", "32", "--data", photos, "--holdout", "1",
                            "--kodak", photos, "--out", out, "--json").stdout)
    assert doc["ok"] and doc["steps"] == 3 and doc["finished"]
    assert doc["held_out_photos"] == ["p3.png"] and "p3.png" not in doc["train_photos"]
    rows = {b["quantization"]: b for b in doc["bundles"]}
    assert set(rows) == {"round", "universal"}
    for q, row in rows.items():
        assert row["parity"]["latent_max_abs_diff"] <= 1e-4 and row["parity"]["image_max_abs_diff"] <= 1e-4
        assert row["kodak_estimate"]["bpp"] > 0 and len(row["kodak_estimate"]["images"]) == 4
        contents = read_artifact(row["path"], Engine.create("auto", 1, None))
        m = contents.manifest
        assert m.kind == "codec" and set(m.graphs) == {"encoder", "decoder"}
        assert set(m.tables) == {"cdf", "cdf_length", "cdf_offset"}
        info = m.extra["codec"]
        assert info["quantization"] == q and info["latent_channels"] == 4 and info["downsample"] == 4
        assert info["precision"] == 16 and info["node_id"] == NODE_ID
        assert info["dither_levels"] == (16 if q == "universal" else None)
        with zipfile.ZipFile(row["path"]) as z:
            assert z.namelist()[0] == "manifest.json"
    from qcompile.codec.train import load_trained

    gm, document = load_trained(out)
    assert bottleneck_of(gm).channels == 4 and document["finished"]
    # fine-tuning from the run, in another mode
    tuned = json.loads(invoke("codec", "train", f"{model_file}:build", "--quantization", "uq-sr", "--steps", "2",
                              "--batch-size", "2", "--crop", "32", "--data", photos, "--holdout", "1",
                              "--init", out, "--no-export", "--out", tmp_path / "tuned", "--json").stdout)
    assert tuned["config"]["init"] == str(out) and tuned["steps"] == 2 and "bundles" not in tuned
    _runtime_round_trip(gm, rows, photos / "p3.png")


def _runtime_round_trip(gm, rows, image_path):
    """Where the runtime's codec kind is installed: the real file's size is the model's estimate, and the
    decoded image is PyTorch's reconstruction (to one 8-bit level: ORT and PyTorch differ by ≤ 1e-4)."""
    pytest.importorskip("qcompile.runtime.codec")
    from qcompile.codec.data import load_image
    from qcompile.codec.train import estimate
    from qcompile.runtime import load

    image = load_image(image_path)
    for q, row in rows.items():
        session = load(row["path"])
        data = session.compress(image.transpose(1, 2, 0))
        decoded = session.decompress(data)
        est = estimate(gm, [image_path], q)["images"][0]
        pixels = image.shape[1] * image.shape[2]
        assert abs(len(data) * 8 / pixels - est["bpp"]) <= 0.02 * est["bpp"] + 8 * 64 / pixels
        b = bottleneck_of(gm)
        b.eval_quantization = q
        from qcompile.codec.data import pad_to_multiple

        x = torch.from_numpy(pad_to_multiple(image, 16)[None].astype(np.float32) / 255)
        with torch.no_grad():
            x_hat = gm(x)[0][0, :, :image.shape[1], :image.shape[2]]
        reference = torch.round(x_hat.clamp(0, 1) * 255).numpy().astype(np.int16).transpose(1, 2, 0)
        assert np.abs(decoded.astype(np.int16) - reference).max() <= 1


def test_bad_input_exits_2_with_a_message(tmp_path, photos, model_file):
    result = invoke("codec", "train", f"{model_file}:build", "--lambda", "-1", "--data", photos,
                    "--out", tmp_path / "a", expect=2)
    assert "lambda must be a positive number" in result.output
    result = invoke("codec", "train", f"{model_file}:NoMarker", "--steps", "1", "--data", photos,
                    "--out", tmp_path / "b", expect=2)
    assert "no Bottleneck marker" in result.output
    result = invoke("codec", "export", tmp_path, expect=2)
    assert "not a finished codec run" in result.output
    result = invoke("codec", "train", "--out", tmp_path / "c", expect=2)  # no photos: nothing to default to
    assert "--data" in result.output


def test_the_reference_codec_ships_with_the_package():
    """The default MODEL of `codec train` loads from the installed package, not from a checkout's examples/."""
    from qcompile.cli.commands.codec_train import DEFAULT_MODEL, model_name
    from qcompile.loading import load_model

    model = load_model(DEFAULT_MODEL)
    assert isinstance(model.bottleneck, Bottleneck) and model.downsample == 16
    assert sum(p.numel() for p in model.parameters()) > 100_000
    assert model_name(DEFAULT_MODEL) == "reference"
    assert model_name("examples/codec_factorized.py:build") == "codec_factorized"


def test_tables_follow_the_contract_layout():
    """Table t = c·L + j holds P(k | u_j) = c(k + u_j + ½) − c(k + u_j − ½) at symbol k − cdf_offset[t]."""
    torch.manual_seed(1)
    levels = 4
    density = FactorizedDensity(2, init_scale=3.0)
    t = build_tables(density, levels)
    for c in range(2):
        for j in range(levels):
            row, offset = t.cdf[c * levels + j], int(t.cdf_offset[c * levels + j])
            u = (2 * j + 1 - levels) / (2 * levels)
            for k in (offset, 0, 1):
                s = k - offset
                table_p = (row[s + 1] - row[s]) / 2 ** 16
                y = torch.full((1, 2, 1, 1), float(k + u))
                with torch.no_grad():
                    model_p = float(density.box_likelihood(y)[0, c, 0, 0])
                assert abs(table_p - model_p) < 2e-3 + 2 ** -16


def test_alpha_schedule_ramps_then_holds():
    from qcompile.codec.train import AlphaSchedule, CodecTrainConfig

    schedule = AlphaSchedule(CodecTrainConfig(quantization="uq-sr", steps=100, alpha_start=1, alpha_end=6,
                                              alpha_ramp=0.5, data="photos"))
    assert [schedule.value(s) for s in (0, 25, 50, 100)] == [1.0, 3.5, 6.0, 6.0]
