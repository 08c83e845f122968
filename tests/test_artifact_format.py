"""The artifact format: manifest versions and fields, hostile metadata, kinds, and multi-graph bundles."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from qcompile.cli.main import cli
from qcompile.export.artifact import PRODUCER, manifest, write_bundle
from qcompile.runtime import Artifact, ArtifactError, OutputError, Session, load, register_kind
from qcompile.runtime.container import onnx_metadata_props
from qcompile.runtime.kinds import _KINDS
from qcompile.runtime.manifest import BASE_FORMAT, FORMAT_VERSION, MANIFEST_KEY, parse_manifest
from test_runtime import MANIFEST, W, images, reference, save_classifier

LEGACY = {  # what qcompile 0.1.0 wrote: separate keys, layers as objects, no format or kind
    "qcompile.version": "0.1.0",
    "qcompile.method": "ste",
    "qcompile.layers": json.dumps([{"name": "fc", "op": "linear", "w_bits": 4, "a_bits": 8, "weight_format": "int4"}]),
    "qcompile.input": json.dumps({"shape": [None, 1, 4, 4], "dtype": "float32", "mean": [0.5], "std": [0.25]}),
    "qcompile.classes": json.dumps(["cat", "dog", "eel"]),
}


def with_manifest(tmp_path: Path, name: str = "m.onnx", text: str | None = None, **changes) -> Path:
    """The test classifier with MANIFEST (or ``text``) changed: a key set to ``None`` is dropped."""
    d = {k: v for k, v in {**MANIFEST, **changes}.items() if v is not None}
    return save_classifier(tmp_path / name, metadata={MANIFEST_KEY: text if text is not None else json.dumps(d)})


# -- versions, kinds, required fields ----------------------------------------------------------


def test_qcompile_0_1_0_artifacts_open_as_classifiers(tmp_path):
    old = save_classifier(tmp_path / "old.onnx", metadata=LEGACY)
    new = with_manifest(tmp_path)
    a, b = Artifact.load(old), Artifact.load(new)
    assert (a.manifest.format, b.manifest.format) == (0, BASE_FORMAT)
    assert (a.version, a.method, a.classes, a.mean, a.std) == ("0.1.0", "ste", ("cat", "dog", "eel"), (0.5,), (0.25,))
    assert a.layers == ({"name": "fc", "op": "linear", "w_bits": 4, "a_bits": 8, "weight_format": "int4"},)
    x = images(4)
    np.testing.assert_array_equal(load(old).predict(x, normalize=True), Session(new).predict(x, normalize=True))


def test_load_opens_a_classifier_as_a_session(tmp_path):
    session = load(with_manifest(tmp_path), providers="cpu", intra_op_threads=1, spinning=True)
    assert isinstance(session, Session) and session.artifact.classes == ("cat", "dog", "eel")
    np.testing.assert_allclose(session.run(images(2)), reference(images(2)), rtol=1e-5, atol=1e-5)


def test_a_newer_format_says_which_runtime_to_install_before_onnxruntime_reads_the_graph(tmp_path):
    # opset 99 does not exist: onnxruntime would fail on it, so the format must be checked first
    path = save_classifier(tmp_path / "future.onnx", opset=99, metadata={MANIFEST_KEY: json.dumps(
        {**MANIFEST, "format": FORMAT_VERSION + 1, "producer": "qcompile 9.1.0"})})
    for open_ in (Session, load, Artifact.load):
        with pytest.raises(ArtifactError, match=f"uses artifact format {FORMAT_VERSION + 1}; this qcompile-runtime "
                                                f".* reads formats up to {FORMAT_VERSION}") as e:
            open_(path)
        assert e.value.hint == "upgrade qcompile-runtime to >= 9.1.0 (pip install -U qcompile-runtime)"


def test_unknown_kinds_and_missing_fields_are_artifact_errors(tmp_path):
    with pytest.raises(ArtifactError, match="kind 'hologram', which this qcompile-runtime cannot open "
                                            r"\(known kinds: .*classifier") as e:
        load(with_manifest(tmp_path, kind="hologram"))
    assert "import the plug-in that registers kind 'hologram'" in e.value.hint
    with pytest.raises(ArtifactError, match="is a 'hologram' artifact; Session runs classifiers") as e:
        Session(with_manifest(tmp_path, kind="hologram"))
    assert "qcompile.runtime.load(path)" in e.value.hint
    for field in ("format", "kind", "producer"):
        with pytest.raises(ArtifactError, match=rf"the manifest lacks required field\(s\) \['{field}'\]"):
            Artifact.load(with_manifest(tmp_path, **{field: None}))
    with pytest.raises(ArtifactError, match="manifest format 0 is not an integer >= 1"):
        Artifact.load(with_manifest(tmp_path, format=0))


def test_metadata_is_read_from_the_protobuf_exactly_as_onnx_reads_it(tmp_path):
    meta = {MANIFEST_KEY: json.dumps({**MANIFEST, "classes": ["chat", "chien", "élan"]}), "other": "x" * 300}
    path = save_classifier(tmp_path / "m.onnx", metadata=meta)
    assert onnx_metadata_props(path) == {p.key: p.value for p in onnx.load(str(path)).metadata_props} == meta


# -- hostile or broken metadata ----------------------------------------------------------------

BAD_INPUTS = [
    ({"mean": [float("nan")], "std": [0.25]}, r"mean \[nan\] is not finite"),
    ({"mean": [0.5], "std": [float("inf")]}, r"std \[inf\] has a value that is not finite and >= 1e-06"),
    ({"mean": [0.5], "std": [1e-300]}, r"std \[1e-300\] has a value that is not finite and >= 1e-06"),
    ({"mean": [0.5], "std": [0]}, r"std \[0.0\] has a value that is not finite"),
    ({"mean": [-1e36], "std": [1e-5]}, "overflow float32"),
    ({"mean": [0.5]}, "only one of mean/std"),
    ({"mean": [0.5, 0.5], "std": [1, 1]}, "mean has 2 values for 1 channels"),
    ({"shape": [None, 3, 4, 4]}, "contradicts the graph's"),
    ({"dtype": "float16"}, "dtype float16 contradicts the graph's float32"),
    ({"mean": "0.5", "std": [1]}, "is not a non-empty list of numbers"),
]


@pytest.mark.parametrize("changes, message", BAD_INPUTS)
def test_hostile_input_specs_are_rejected_in_the_manifest_and_in_0_1_0_keys(tmp_path, changes, message):
    spec = {k: v for k, v in {"shape": [None, 1, 4, 4], "dtype": "float32", **changes}.items()}
    new = with_manifest(tmp_path, input=spec)  # json.dumps writes NaN and Infinity, as a hostile file would
    old = save_classifier(tmp_path / "old.onnx", metadata={**LEGACY, "qcompile.input": json.dumps(spec)})
    for path in (new, old):
        with pytest.raises(ArtifactError, match=message) as e:
            Session(path)
        assert "re-export" in e.value.hint


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "the manifest nests deeper than Python can parse"),
    (json.dumps({**MANIFEST, "codec": [[[[[[[[[1]]]]]]]]]}), "the manifest nests deeper than 8 levels"),
    ("{not json", "the manifest is not valid JSON"),
    ("[1, 2]", "the manifest should be a JSON object"),
    (json.dumps({**MANIFEST, "classes": [1, 2, 3]}), "manifest classes should be a list of strings"),
    (json.dumps({**MANIFEST, "layers": [{"name": "fc"}]}), "manifest layer .* is not a row"),
    (json.dumps({**MANIFEST, "kind": ""}), "manifest kind '' is not a non-empty string"),
])
def test_broken_manifest_json_is_an_artifact_error(tmp_path, text, message):
    with pytest.raises(ArtifactError, match=message):
        Artifact.load(with_manifest(tmp_path, text=text))


def test_deeply_nested_0_1_0_metadata_is_an_artifact_error(tmp_path):
    path = save_classifier(tmp_path / "deep.onnx", metadata={**LEGACY, "qcompile.classes": "[" * 100_000})
    with pytest.raises(ArtifactError, match="metadata 'qcompile.classes' nests deeper than Python can parse"):
        Session(path)


def test_a_class_list_must_match_the_output_width(tmp_path):
    with pytest.raises(ArtifactError, match="names 4 classes, the model outputs 3 scores"):
        Session(with_manifest(tmp_path, classes=["a", "b", "c", "d"]))
    four = {MANIFEST_KEY: json.dumps({**MANIFEST, "classes": ["a", "b", "c", "d"]})}
    session = Session(save_classifier(tmp_path / "dynamic.onnx", fixed_width=False, metadata=four))
    assert session.artifact.output_width is None
    with pytest.raises(ArtifactError, match="names 4 classes, the model outputs 3 scores"):
        session.predict(images(2))
    fine = save_classifier(tmp_path / "fine.onnx", fixed_width=False, metadata={MANIFEST_KEY: json.dumps(MANIFEST)})
    assert Session(fine).predict(images(2)).shape == (2, 3)


def test_non_finite_outputs_for_finite_inputs_are_an_error_naming_the_cause(tmp_path):
    broken = W.copy()
    broken[0, 1] = np.inf  # e.g. a folded BatchNorm that overflowed
    session = Session(save_classifier(tmp_path / "inf.onnx", w=broken, metadata={MANIFEST_KEY: json.dumps(MANIFEST)}))
    with pytest.raises(OutputError, match=r"returned \d+ NaN/inf values among 6 outputs for finite inputs") as e:
        session.predict(images(2), normalize=True)
    assert "mean [0.5], std [0.25]" in e.value.hint and "BatchNorm" in e.value.hint
    x = images(2)
    x[0, 0, 0, 0] = np.nan  # garbage in: the caller's business, not an error
    assert np.isnan(Session(with_manifest(tmp_path)).run(x)[0]).all()


def run_json(*args) -> tuple[int, dict]:
    result = CliRunner().invoke(cli, [str(a) for a in args] + ["--json"])
    return result.exit_code, json.loads(result.stdout)


def tiny_npz(tmp_path: Path) -> str:
    x, y = images(8), np.arange(8) % 3
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    return f"npz:{tmp_path / 'd.npz'}"


def test_qcompile_run_exits_2_instead_of_reporting_nan_outputs(tmp_path):
    broken = W.copy()
    broken[:, 0] = np.nan
    path = save_classifier(tmp_path / "nan.onnx", w=broken, metadata={MANIFEST_KEY: json.dumps(MANIFEST)})
    code, report = run_json("run", path, "--data", tiny_npz(tmp_path))
    assert code == 2 and report["ok"] is False and report["error"]["type"] == "OutputError"
    assert "accuracy" not in report


def test_run_and_bench_take_spin_flags(tmp_path):
    path, data = with_manifest(tmp_path), tiny_npz(tmp_path)
    runs = {flag: run_json("run", path, "--data", data, *flag) for flag in ((), ("--spin",), ("--no-spin",))}
    assert {flag: (code, r["spinning"]) for flag, (code, r) in runs.items()} == \
        {(): (0, False), ("--spin",): (0, True), ("--no-spin",): (0, False)}
    assert len({r["accuracy"] for _, r in runs.values()}) == 1
    code, report = run_json("bench", path, "--batch-sizes", "1", "--repeats", "2", "--warmup", "0", "--spin")
    assert code == 0 and report["model"]["spinning"] is True


# -- bundles and kinds -------------------------------------------------------------------------


def matmul_graph(name: str, w: np.ndarray) -> onnx.ModelProto:
    """y = x @ w for x of shape [batch, rows of w]."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, w.shape[1]])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


class ToyCodec:
    """A two-graph kind for the tests: decode(encode(x)) + offset, the offset a side table."""

    def __init__(self, contents):
        self.encoder, self.decoder = contents.session("encoder"), contents.session("decoder")
        self.offset = contents.table("offset")
        self.manifest = contents.manifest

    def __call__(self, x: np.ndarray) -> np.ndarray:
        latent = self.encoder.run(None, {"x": x})[0]
        return self.decoder.run(None, {"x": latent})[0] + self.offset


@pytest.fixture
def toy_kind():
    register_kind("toycodec", ToyCodec, graphs=("encoder", "decoder"), tables=("offset",), fields=("latent",))
    yield
    del _KINDS["toycodec"]


ENC = np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32)
DEC = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
OFFSET = np.arange(4, dtype=np.float32)


def write_toy(path: Path, **fields) -> Path:
    m = manifest("toycodec", layers=({"name": "enc", "op": "Linear", "w_bits": 4, "a_bits": None,
                                      "weight_format": "int4", "graph": "encoder"},), **fields)
    graphs = {"encoder": matmul_graph("enc", ENC), "decoder": matmul_graph("dec", DEC).SerializeToString()}
    write_bundle(path, m, graphs, {"offset": OFFSET})
    return path


def test_a_bundle_of_two_graphs_and_a_table_opens_as_its_kind(tmp_path, toy_kind):
    path = write_toy(tmp_path / "toy.qcz", extra={"latent": [2]})
    codec = load(path, providers="cpu")
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(codec(x), x @ ENC @ DEC + OFFSET, rtol=1e-5, atol=1e-5)
    m = codec.manifest
    assert (m.kind, m.producer, m.graphs, m.tables, dict(m.extra)) == \
        ("toycodec", PRODUCER, ("encoder", "decoder"), ("offset",), {"latent": [2]})
    assert m.layers[0]["graph"] == "encoder" and m.layers[0]["a_bits"] is None
    with zipfile.ZipFile(path) as z:  # an inspectable, uncompressed zip with the manifest first
        assert z.namelist() == ["manifest.json", "encoder.onnx", "decoder.onnx", "offset.npy"]
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED}
        assert parse_manifest(z.read("manifest.json").decode(), "x") == m
    assert write_toy(tmp_path / "again.qcz", extra={"latent": [2]}).read_bytes() == path.read_bytes()
    with pytest.raises(ArtifactError, match="is a 'toycodec' artifact; Session runs classifiers"):
        Session(path)


def test_a_bundle_lacking_what_its_kind_needs_is_an_artifact_error(tmp_path, toy_kind):
    with pytest.raises(ArtifactError, match=r"'toycodec' artifact without its manifest fields \['latent'\]"):
        load(write_toy(tmp_path / "nolatent.qcz"))
    m = manifest("toycodec", extra={"latent": [2]})
    write_bundle(tmp_path / "one.qcz", m, {"encoder": matmul_graph("enc", ENC)})
    with pytest.raises(ArtifactError, match=r"without its graphs \['decoder'\]; tables \['offset'\]"):
        load(tmp_path / "one.qcz")
    single = with_manifest(tmp_path, kind="toycodec", latent=[2])  # a multi-graph kind in a plain .onnx
    with pytest.raises(ArtifactError, match="a single .onnx file holds one graph: this kind is written as a bundle"):
        load(single)


def test_an_altered_or_truncated_bundle_is_an_artifact_error(tmp_path, toy_kind):
    path = write_toy(tmp_path / "toy.qcz", extra={"latent": [2]})
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("extra.onnx", b"")
    with pytest.raises(ArtifactError, match="holds .*'extra.onnx'.*, its manifest lists"):
        load(path)
    path = write_toy(tmp_path / "toy.qcz", extra={"latent": [2]})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match="starts like a zip archive .* cannot be read as one"):
        load(path)


def test_the_bundle_writer_refuses_what_the_reader_would_refuse(tmp_path):
    graph = matmul_graph("g", ENC)
    with pytest.raises(ArtifactError, match="must be distinct identifiers"):
        write_bundle(tmp_path / "b.qcz", manifest("toycodec"), {"../escape": graph})
    with pytest.raises(ValueError, match="numeric arrays only"):
        write_bundle(tmp_path / "b.qcz", manifest("toycodec"), {"g": graph}, {"t": np.array([{}], dtype=object)})
    with pytest.raises(ValueError, match="at least one graph"):
        write_bundle(tmp_path / "b.qcz", manifest("toycodec"), {})
    assert list(tmp_path.iterdir()) == []
