"""The codec runtime on tiny bundles built with onnx.helper (tests/codec_bundle.py): bit-exact round trips
(another process, other thread counts), refused files, escapes, the seed, the CLI, BD-rate and MS-SSIM."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from codec_bundle import build_codec, laplace_tables

import qcompile.runtime as rt
from qcompile.runtime.codec import bitstream
from qcompile.runtime.codec.bdrate import bd_rate, pareto
from qcompile.runtime.codec.entropy import EntropyCoder
from qcompile.runtime.codec.metrics import K1, PEAK, ms_ssim, psnr, ssim_terms
from qcompile.runtime.codec.session import CodecSession
from qcompile.runtime.dither import dither_offsets
from qcompile.runtime.errors import ArtifactError


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish test image (gradients plus noise), uint8 H×W×3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / max(w, 1), yy * 255 / max(h, 1), (xx + yy) * 127 / max(h + w, 1)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("codecs")
    return {"round": build_codec(root / "round.qcodec"),
            "universal": build_codec(root / "universal.qcodec", quantization="universal"),
            "universal_seed8": build_codec(root / "universal8.qcodec", quantization="universal", seed=8),
            "escapes": build_codec(root / "escapes.qcodec", gain=60.0, radius=2, quantization="universal"),
            "round_fine": build_codec(root / "round_fine.qcodec", gain=12.0),
            # invertible (12 latents per 2×2×3 block): the reconstruction error is the quantization's alone
            "lossy": build_codec(root / "lossy.qcodec", m=12, ds=2, gain=3.0, radius=40),
            "finer": build_codec(root / "finer.qcodec", m=12, ds=2, gain=30.0, radius=40)}


def expected_decode(session: CodecSession, img: np.ndarray) -> np.ndarray:
    """What decompress(compress(img)) must give, computed from the graphs and the dither directly."""
    spec, ds = session.spec, session.spec.downsample
    h, w = img.shape[:2]
    m, lh, lw = session.latent_shape(h, w)
    padded = np.pad(img, ((0, lh * ds - h), (0, lw * ds - w), (0, 0)), mode="edge")
    x = (padded.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[None]
    (y,) = session.contents.session("encoder").run(None, {"image": x})
    u = (dither_offsets(spec.seed, spec.node_id, (m, lh, lw), spec.dither_levels)[None] if spec.universal
         else np.zeros_like(y))
    y_hat = (np.rint(y - u) + u).astype(np.float32)
    (out,) = session.contents.session("decoder").run(None, {"latent_hat": y_hat})
    return np.rint(np.clip(out[0], 0, 1) * np.float32(255)).astype(np.uint8).transpose(1, 2, 0)[:h, :w]


@pytest.mark.parametrize("kind", ["round", "universal", "escapes"])
@pytest.mark.parametrize("size", [(1, 1), (5, 9), (37, 44)])
def test_round_trip_decodes_exactly_the_quantized_latent(bundles, kind, size):
    session = rt.load(bundles[kind])
    assert isinstance(session, CodecSession)
    img = image(*size)
    data = session.compress(img)
    assert data[:4] == bitstream.MAGIC and data == session.compress(img)  # deterministic
    out = session.decompress(data)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, expected_decode(session, img))


def test_reconstruction_improves_with_rate(bundles):
    img = image(48, 64)
    coarse, fine = rt.load(bundles["lossy"]), rt.load(bundles["finer"])
    a, b = coarse.compress(img), fine.compress(img)
    assert len(b) > len(a)
    assert psnr(img, fine.decompress(b)) > psnr(img, coarse.decompress(a)) + 10


def test_escape_codes_round_trip_extreme_values(bundles):
    spec = rt.load(bundles["round"]).spec
    coder = EntropyCoder(spec)
    k = np.array([0, -6, 6, -7, 7, 100, -100, (1 << 31) - 1, -(1 << 31) + 1, 3, 12345678, -2], dtype=np.int64)
    table = np.arange(k.size) % spec.tables
    np.testing.assert_array_equal(coder.decode(coder.encode(k, table), table, "test"), k)


def test_escapes_are_coded_not_clamped(bundles):
    session = rt.load(bundles["escapes"])
    img = image(16, 16)
    m, h, w = session.latent_shape(16, 16)
    x = (img.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    (y,) = session.contents.session("encoder").run(None, {"image": x})
    assert np.abs(np.rint(y)).max() > 3  # the tables cover -2..2: some latents need escapes
    np.testing.assert_array_equal(session.decompress(session.compress(img)), expected_decode(session, img))


DECODE_SCRIPT = r"""
import sys, numpy as np, qcompile.runtime as rt
s = rt.load(sys.argv[1], intra_op_threads=int(sys.argv[4]))
np.save(sys.argv[3], s.decompress(open(sys.argv[2], "rb").read()))
"""


@pytest.mark.parametrize("kind", ["round", "universal"])
def test_decoding_is_bit_exact_in_another_process_and_thread_count(bundles, kind, tmp_path):
    img = image(64, 72, seed=3)
    here = rt.load(bundles[kind], intra_op_threads=2)
    qc = tmp_path / "x.qc"
    qc.write_bytes(here.compress(img))
    mine = here.decompress(qc.read_bytes())
    np.testing.assert_array_equal(rt.load(bundles[kind], intra_op_threads=1).decompress(qc.read_bytes()), mine)
    done = subprocess.run([sys.executable, "-c", DECODE_SCRIPT, bundles[kind], qc, tmp_path / "o.npy", "1"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), mine)
    assert rt.load(bundles[kind], intra_op_threads=1).compress(img) == qc.read_bytes()  # encoding too


def damaged(data: bytes) -> dict[str, tuple[bytes, str]]:
    flip = lambda b, i: b[:i] + bytes([b[i] ^ 0x40]) + b[i + 1:]  # noqa: E731
    future = data[:4] + bytes([bitstream.VERSION + 1]) + data[5:]
    return {"truncated payload": (data[:-3], "truncated"), "truncated header": (data[:20], "truncated"),
            "empty": (b"", "not a qcompile codec file"), "flipped payload byte": (flip(data, len(data) - 5), "corrupt"),
            "flipped header byte": (flip(data, 10), "header is corrupt"),
            "wrong magic": (b"PNG!" + data[4:], "not a qcompile codec file"),
            "future version": (future, "format version 2"),
            "extra bytes": (data + b"\0\0\0\0", "longer than its header says")}


def test_damaged_files_are_refused_with_the_cause(bundles):
    session = rt.load(bundles["universal"])
    data = session.compress(image(20, 24))
    for case, (bad, message) in damaged(data).items():
        with pytest.raises(ArtifactError, match=message) as e:
            session.decompress(bad, "x.qc")
        assert "x.qc" in e.value.message and e.value.hint, case


def test_wrong_model_and_other_seed_are_refused(bundles):
    img = image(20, 24)
    data = rt.load(bundles["universal"]).compress(img)
    for other in ("round", "universal_seed8"):
        with pytest.raises(ArtifactError, match="compressed with another codec") as e:
            rt.load(bundles[other]).decompress(data, "x.qc")
        assert "--model" in e.value.hint
    seed8 = rt.load(bundles["universal_seed8"])
    assert seed8.compress(img)[bitstream.HEADER_BYTES:] != data[bitstream.HEADER_BYTES:]  # the dither is the seed's


def test_a_forged_fingerprint_still_cannot_pass_a_wrong_latent_size(bundles):
    session = rt.load(bundles["round"])
    data = session.compress(image(20, 24))
    header, payload = bitstream.unpack(data, "x")
    forged = bitstream.pack(bitstream.Header(20, 24, header.channels, header.latent_h + 1, header.latent_w,
                                             header.fingerprint), payload)
    with pytest.raises(ArtifactError, match="does not fit"):
        session.decompress(forged, "x.qc")
    huge = bitstream.pack(bitstream.Header(1 << 20, 1 << 20, header.channels, 65535, 65535, header.fingerprint),
                          payload)
    with pytest.raises(ArtifactError, match="more than the"):
        session.decompress(huge, "x.qc")
    shorter = bitstream.pack(bitstream.Header(8, 8, header.channels, 2, 2, header.fingerprint), payload)
    with pytest.raises(ArtifactError, match="more data than the latent|does not decode"):
        session.decompress(shorter, "x.qc")


def test_bad_tables_are_refused_at_load(tmp_path):
    from qcompile.export.artifact import manifest, write_bundle

    session = rt.load(build_codec(tmp_path / "good.qcodec"))
    tables = laplace_tables([1.0, 2.0, 3.0, 4.0], 6)
    tables["cdf"][2, 5] = tables["cdf"][2, 4]  # a zero-probability symbol
    fields = dict(session.spec.fields)
    graphs = {r: session.contents.graph_bytes(r) for r in ("encoder", "decoder")}
    write_bundle(tmp_path / "flat.qcodec", manifest("codec", extra={"codec": fields}), graphs, tables)
    with pytest.raises(ArtifactError, match="CDF table 2 is not a 16-bit CDF"):
        rt.load(tmp_path / "flat.qcodec")
    tables = laplace_tables([1.0, 2.0, 3.0], 6)
    write_bundle(tmp_path / "three.qcodec", manifest("codec", extra={"codec": fields}), graphs, tables)
    with pytest.raises(ArtifactError, match="3 CDF tables for 4 channels: expected 4"):
        rt.load(tmp_path / "three.qcodec")


def test_gray_and_rgba_inputs_are_converted(bundles):
    session = rt.load(bundles["round"])
    rgb = image(12, 16)
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(session.decompress(session.compress(gray)),
                                  session.decompress(session.compress(np.repeat(gray[:, :, None], 3, axis=2))))
    rgba = np.concatenate([rgb, np.full((12, 16, 1), 7, np.uint8)], axis=2)
    assert session.compress(rgba) == session.compress(rgb)
    with pytest.raises(rt.InputError, match="uint8"):
        session.compress(rgb.astype(np.float32))


# -- command lines ------------------------------------------------------------------------------

def runtime_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qcompile.runtime.cli", *map(str, args)], capture_output=True,
                          text=True)


def test_cli_compress_decompress_json_and_errors(bundles, tmp_path):
    from PIL import Image

    Image.fromarray(image(30, 41)).save(tmp_path / "in.png")
    done = runtime_cli("codec", "compress", tmp_path / "in.png", "-o", tmp_path / "a.qc", "--model",
                       bundles["universal"], "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    size = (tmp_path / "a.qc").stat().st_size
    assert report["ok"] and report["bytes"] == size and report["bpp"] == pytest.approx(8 * size / (30 * 41))
    assert report["model"]["quantization"] == "universal" and set(report["encode"]) == {"network_s", "entropy_s"}
    done = runtime_cli("codec", "decompress", tmp_path / "a.qc", "-o", tmp_path / "a.png", "-m", bundles["universal"])
    assert done.returncode == 0, done.stderr
    decoded = np.asarray(Image.open(tmp_path / "a.png"))
    np.testing.assert_array_equal(decoded, rt.load(bundles["universal"]).decompress((tmp_path / "a.qc").read_bytes()))
    (tmp_path / "cut.qc").write_bytes((tmp_path / "a.qc").read_bytes()[:-8])
    done = runtime_cli("codec", "decompress", tmp_path / "cut.qc", "-o", tmp_path / "b.png", "-m", bundles["universal"])
    assert done.returncode == 2 and "truncated" in done.stderr and "How to fix" in done.stderr
    assert not (tmp_path / "b.png").exists()
    done = runtime_cli("codec", "decompress", tmp_path / "a.qc", "-o", tmp_path / "b.png", "-m", bundles["round"],
                       "--json")
    assert done.returncode == 2 and json.loads(done.stdout)["error"]["type"] == "ArtifactError"


def test_cli_eval_json_has_curves_and_bd_rates(bundles, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(image(24 + 8 * i, 32, seed=i)).save(folder / f"{i}.png")
    done = runtime_cli("codec", "eval", "--data", folder, "-m", bundles["round"], "-m", bundles["round_fine"],
                       "--jpeg-qualities", "20,60,90", "--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    assert r["images"] == ["0.png", "1.png"] and [p["name"] for p in r["curves"]["round"]] == ["tiny-round"] * 2
    first = r["codecs"][0]["images"][0]
    assert first["bpp"] == pytest.approx(8 * first["bytes"] / (24 * 32)) and first["ms_ssim"] is None  # too small
    assert r["codecs"][0]["mean"]["bpp"] == pytest.approx(np.mean([i["bpp"] for i in r["codecs"][0]["images"]]))
    assert [(b["anchor"], b["test"]) for b in r["bd_rates"]] == [("JPEG", "round")]
    assert len(r["jpeg"]) == 3 and r["jpeg"][0]["mean"]["bpp"] < r["jpeg"][2]["mean"]["bpp"]


def test_qcompile_codec_group_delegates_to_the_runtime(bundles, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from qcompile.cli.main import cli

    Image.fromarray(image(10, 13)).save(tmp_path / "in.png")
    runner = CliRunner()
    done = runner.invoke(cli, ["codec", "compress", str(tmp_path / "in.png"), "-o", str(tmp_path / "a.qc"),
                               "--model", str(bundles["round"]), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["bytes"] == (tmp_path / "a.qc").stat().st_size
    done = runner.invoke(cli, ["codec", "decompress", str(tmp_path / "a.qc"), "-o", str(tmp_path / "a.png"),
                               "--model", str(bundles["universal"])])
    assert done.exit_code == 2 and "another codec" in done.output


def test_shipped_codecs_default_to_the_middle_quality_and_decode_by_fingerprint(tmp_path, monkeypatch):
    from qcompile.runtime.codec import actions, shipped

    for i, gain in enumerate((2.0, 6.0, 12.0)):
        build_codec(tmp_path / f"q{i}.qcodec", gain=gain)
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    assert [c["name"] for c in shipped.shipped()] == ["q0", "q1", "q2"]
    assert shipped.resolve_model(None) == tmp_path / "q1.qcodec" and shipped.resolve_model("q2").name == "q2.qcodec"
    with pytest.raises(ArtifactError, match="neither a file nor a shipped codec"):
        shipped.resolve_model("q9")
    from PIL import Image

    Image.fromarray(image(9, 9)).save(tmp_path / "x.png")
    actions.compress_file(tmp_path / "x.png", tmp_path / "x.qc", "q2")
    report = actions.decompress_file(tmp_path / "x.qc", tmp_path / "x-out.png")
    assert report["model"]["path"] == str(tmp_path / "q2.qcodec")
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "none")
    with pytest.raises(ArtifactError, match="no codec is shipped"):
        shipped.resolve_model(None)


# -- metrics --------------------------------------------------------------------------------------

def test_bd_rate_matches_the_reference_implementation_and_hand_values():
    # bjontegaard 1.3.0 (FAU-LMS), method="cubic", on its README example and on a classic H.264 example
    r1, p1 = [9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851]
    r2, p2 = [9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987]
    assert bd_rate(list(zip(r1, p1)), list(zip(r2, p2)))["bd_rate_pct"] == pytest.approx(-4.420462706026296, abs=1e-8)
    r1, p1 = [686.76, 309.58, 157.11, 85.95], [40.28, 37.18, 34.24, 31.42]
    r2, p2 = [893.34, 407.8, 204.93, 112.75], [40.39, 37.21, 34.17, 31.24]
    assert bd_rate(list(zip(r1, p1)), list(zip(r2, p2)))["bd_rate_pct"] == pytest.approx(31.397374054908656, abs=1e-8)
    # log-rate linear in PSNR: 0.8× the rate everywhere is -20 % exactly, over the shared PSNR range only
    anchor = [(np.exp(q / 10), q) for q in (30, 32, 34, 36)]
    test = [(0.8 * np.exp(q / 10), q) for q in (31, 33, 35, 37, 39)]
    r = bd_rate(anchor, test)
    assert r["bd_rate_pct"] == pytest.approx(-20.0, abs=1e-9) and (r["psnr_low"], r["psnr_high"]) == (31, 36)
    assert bd_rate(anchor, [(1.0, 50.0), (2.0, 52.0)])["bd_rate_pct"] is None  # no overlap
    assert pareto([(0.4, 27.5), (0.2, 26.0), (0.46, 27.3), (0.3, 26.0)]) == [(0.2, 26.0), (0.4, 27.5)]


def test_psnr_and_ssim_hand_values():
    a = np.full((200, 200, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 110
    assert psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / (100 / (200 * 200 * 3))))
    assert ms_ssim(a, a) == pytest.approx(1.0)
    x, y = np.full((1, 20, 20), 100.0), np.full((1, 20, 20), 120.0)  # constant: SSIM is the luminance term
    c1 = (K1 * PEAK) ** 2
    ssim, cs = ssim_terms(x, y)
    assert ssim[0] == pytest.approx((2 * 100 * 120 + c1) / (100 ** 2 + 120 ** 2 + c1)) and cs[0] == pytest.approx(1)


def test_ms_ssim_matches_pytorch_msssim():
    a = image(181, 207, seed=5)
    b = np.clip(a.astype(int) + np.random.default_rng(6).integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    # pytorch_msssim 1.0.0: ms_ssim(X, Y, data_range=255) on float64 N×C×H×W tensors of a and b gave
    # 0.9108553227832425; its Gaussian window is built in float32, hence the 1e-6 level difference
    assert ms_ssim(a, b) == pytest.approx(0.9108553227832425, abs=2e-6)
    assert ms_ssim(a[:160], b[:160]) is None



TORCH_FREE_SCRIPT = r"""
import json, sys
import numpy as np
import qcompile.runtime as rt
from qcompile.runtime.cli.main import main

s = rt.load(sys.argv[1])
img = (np.arange(10 * 11 * 3) % 251).astype(np.uint8).reshape(10, 11, 3)
out = s.decompress(s.compress(img))
code = main(["codec", "eval", "--data", sys.argv[2], "-m", sys.argv[1], "--jpeg-qualities", "50", "--json"])
print(json.dumps({"shape": list(out.shape), "code": code, "torch": "torch" in sys.modules,
                  "onnx": any(m == "onnx" or m.startswith("onnx.") for m in sys.modules)}))
"""


def test_codec_runs_with_torch_and_onnx_blocked(bundles, python_without, tmp_path):
    from PIL import Image

    Image.fromarray(image(12, 12)).save(tmp_path / "a.png")
    done = python_without(TORCH_FREE_SCRIPT, bundles["universal"], tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"shape": [10, 11, 3], "code": 0, "torch": False, "onnx": False}
