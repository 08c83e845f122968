"""The method plug-in seams, proven by a plug-in defined here and registered at run time.

``Toy`` uses every hook of :class:`qcompile.methods.Method`: its own command-line options, its own
activation quantizer (the observed range widened by ``--toy-headroom``), an fx export pass (a NaN
guard on the output), an ONNX pass (writes what it saw into the metadata), a data source (images
synthesised from the float model when no data is given, and a named source ``toy:N``) and a label.
It is compiled and exported end to end through the API and through the CLI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from click.testing import CliRunner
from torch import fx

import qcompile
from conftest import TinyBNNet
from qcompile.cli.main import cli
from qcompile.data import ArrayDataset, DatasetSplits
from qcompile.methods import CliOption, CliOptions, Method, cli_options, registry
from qcompile.parity import compare_onnx
from qcompile.passes.base import GraphPass
from qcompile.quantizers import ActivationQuantizer

ROOT = Path(__file__).resolve().parents[1]
TOY_SAMPLES = 96


class HeadroomQuantizer(ActivationQuantizer):
    """An activation quantizer whose range is the observed one times ``headroom``."""

    def __init__(self, bits: int, signed: bool, headroom: float):
        super().__init__(bits, signed)
        self.headroom = headroom

    def scale(self) -> torch.Tensor:
        return super().scale() * self.headroom


class GuardNaN(GraphPass):
    """fx export pass: the output becomes ``where(isnan(y), 0, y)`` (the identity on finite outputs)."""

    def run(self, gm: fx.GraphModule):
        output = next(n for n in gm.graph.nodes if n.op == "output")
        value = output.args[0]
        with gm.graph.inserting_before(output):
            nan = gm.graph.call_function(torch.isnan, (value,))
            output.args = (gm.graph.call_function(torch.where, (nan, 0.0, value)),)
        return True, {"guarded": value.name}


class CountDequantize(ir.passes.InPlacePass):
    """ONNX pass: records how many DequantizeLinear nodes it sees (so it ran after DecodeWeight lowering)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = sum(1 for node in model.graph if node.op_type == "DequantizeLinear")
        model.metadata_props["toy.dequantize_nodes"] = str(count)
        return ir.passes.PassResult(model, modified=True)


def synthesise(model: torch.nn.Module, shape: tuple[int, ...], n: int, seed: int) -> ArrayDataset:
    """Uniform random images labelled by the float model: data made from the model alone."""
    x = np.random.default_rng(seed).random((n, *shape), dtype=np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy().astype(np.int64)
    return ArrayDataset(x, y)


class Toy(Method):
    name = "toy"
    summary = "a plug-in that uses every hook"
    cli_options = CliOptions(
        title="Toy", description="Exercises every method hook.", usage="with --a-bits 2..8",
        options=(CliOption("--toy-headroom", "headroom", type=float, min=1, help="Widen activation ranges by this."),
                 CliOption("--toy-samples", "samples", type=int, min=8, help="Images to synthesise without --data.")))

    def activation_quantizer(self, site, signed):
        return HeadroomQuantizer(site.a_bits, signed, self.options.get("headroom", 1.0))

    def data_source(self, spec, model, example_inputs):
        if spec is None:
            n = self.options.get("samples", TOY_SAMPLES)
        elif spec.startswith("toy:"):
            n = int(spec.removeprefix("toy:"))
        else:
            return None
        shape = tuple(example_inputs[0].shape[1:])
        return DatasetSplits.build(f"toy{n}", synthesise(model, shape, n, 0), synthesise(model, shape, n // 4, 1),
                                   [str(i) for i in range(10)])

    def export_passes(self, plan):
        return [GuardNaN()]

    def onnx_passes(self, plan):
        return [CountDequantize()]

    def label(self, spec):
        return f"toy(h={self.options.get('headroom', 1.0)}) {spec.label()}"


@pytest.fixture
def toy(monkeypatch):
    """``Toy`` registered for one test (the registry is restored afterwards)."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_method(Toy)
    return Toy


def invoke(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def invoke_json(*args, expect: int = 0) -> dict:
    code, stdout, stderr = invoke(*args, "--json")
    assert code == expect, f"exit {code}\n{stdout}\n{stderr}"
    return json.loads(stdout)


def onnx_facts(path: Path) -> tuple[list[str], dict[str, str]]:
    model = onnx.load(path)
    return [n.op_type for n in model.graph.node], {p.key: p.value for p in model.metadata_props}


def check_export(path: Path, gm: fx.GraphModule, splits: DatasetSplits) -> None:
    """The ONNX pass and the fx pass are in the file, and it computes what PyTorch computes."""
    ops, meta = onnx_facts(path)
    assert "IsNaN" in ops and "Where" in ops
    assert int(meta["toy.dequantize_nodes"]) == ops.count("DequantizeLinear") >= 3
    parity = compare_onnx(gm, path, splits.test, splits.mean, splits.std)
    assert parity["max_abs_diff"] <= 1e-4 and parity["agreement"] == 1.0


# ----------------------------------------------------------------------------- API
def test_every_hook_through_the_api(toy, tmp_path):
    torch.manual_seed(0)
    cm = qcompile.compile(TinyBNNet(), input_shape=(1, 1, 8, 8), method="toy", method_options={"headroom": 2.0})
    assert cm.data is None  # no data given: nothing is loaded or synthesised until a step needs it

    quantizers = cm.activation_quantizers()
    assert len(quantizers) == 3 and all(type(q) is HeadroomQuantizer and q.headroom == 2.0 for q in quantizers)
    result = cm.finetune(epochs=1, max_steps=2, batch_size=32, progress=False)
    assert result.steps == 2 and cm.data.name == f"toy{TOY_SAMPLES}" and len(cm.data.test) == TOY_SAMPLES // 4
    q = quantizers[0]
    plain = ActivationQuantizer.scale(q)
    assert torch.equal(q.scale(), plain * 2.0)

    deployable = cm.deployable()
    assert any(n.target is torch.isnan for n in deployable.graph.nodes)
    assert not any(n.target is torch.isnan for n in cm.graph_module.graph.nodes)  # export passes work on a copy
    report = cm.export(tmp_path / "toy.onnx")
    assert "CountDequantize" in report.onnx_passes
    check_export(tmp_path / "toy.onnx", deployable, cm.data)

    assert cm.evaluate("toy:40") >= 0 and cm.data.name == "toy40" and cm.data_spec == "toy:40"  # a named source
    assert cm.method.label(cm.plan.spec) == "toy(h=2.0) uniform W4A8"


def test_a_source_the_method_does_not_name_goes_to_the_loaders(toy):
    cm = qcompile.compile(TinyBNNet(), input_shape=(1, 1, 8, 8), method="toy", data="digits")
    assert cm.data.name == "digits" and cm.load_data(None).name == f"toy{TOY_SAMPLES}"


def test_without_a_data_source_a_step_still_needs_data():
    cm = qcompile.compile(TinyBNNet(), input_shape=(1, 1, 8, 8))
    assert cm.load_data(None) is None
    with pytest.raises(qcompile.errors.ConfigError, match="this step needs data"):
        cm.evaluate()


# ----------------------------------------------------------------------------- CLI
def test_every_hook_through_the_cli(toy, tmp_path):
    out, run_dir = tmp_path / "toy.onnx", tmp_path / "run"
    args = ["conftest:TinyBNNet", "--input-shape", "1,1,8,8", "--method", "toy"]
    s = invoke_json("compile", *args, "--toy-headroom", "1.5", "--toy-samples", "64", "--epochs", "1",
                    "--max-steps", "2", "--batch-size", "16", "--out", out, "--run-dir", run_dir)
    assert s["spec"]["method_options"] == {"headroom": 1.5, "samples": 64}
    assert s["accuracy"]["test_samples"] == 16 and s["parity"]["samples"] == 16  # no --data: the method's own
    assert s["parity"]["max_abs_diff"] <= 1e-4 and "CountDequantize" in s["onnx_passes"]
    assert json.loads((run_dir / "history.json").read_text())["label"] == "toy(h=1.5) uniform W4A8"

    from qcompile.run_dir import load_run

    cm = load_run(run_dir)
    assert cm.data is None and all(q.headroom == 1.5 for q in cm.activation_quantizers())
    check_export(out, cm.deployable(), cm.load_data(None))

    again = invoke_json("export", run_dir, "--out", tmp_path / "again.onnx")  # a reloaded run asks the method again
    assert again["parity"]["samples"] == 16 and again["parity"]["max_abs_diff"] <= 1e-4
    assert onnx_facts(tmp_path / "again.onnx") == onnx_facts(out)

    named = invoke_json("compile", *args, "--data", "toy:40", "--epochs", "0", "--out", tmp_path / "named.onnx",
                        "--run-dir", tmp_path / "named")
    assert named["accuracy"]["test_samples"] == 10


def test_a_methods_options_with_another_method_are_an_error_naming_them(toy):
    doc = invoke_json("inspect", "conftest:TinyBNNet", "--input-shape", "1,1,8,8", "--toy-samples", "8",
                      "--toy-headroom", "2", expect=2)
    assert doc["error"]["message"] == "--toy-headroom, --toy-samples configure Toy, but the method is 'ste'"
    assert doc["error"]["hint"] == "add --method toy (with --a-bits 2..8), or drop --toy-headroom, --toy-samples"


def test_compile_help_lists_each_methods_options_under_it(toy):
    code, text, _ = invoke("compile", "--help")
    assert code == 0
    core, _, methods = text.partition("\nMetaQuant options (--method metaquant):\n")
    assert "--w-bits" in core and "--meta" not in core and "--toy" not in core
    metaquant, _, toy_part = methods.partition("\nToy options (--method toy):\n")
    assert "--meta-hidden" in metaquant and "--meta-bias / --no-meta-bias" in metaquant
    assert "Exercises every method hook." in toy_part and "--toy-headroom" in toy_part


def test_a_flag_two_parties_claim_is_refused(toy):
    class Clash(Method):
        name = "clash"
        cli_options = CliOptions(options=(CliOption("--seed", "seed", type=int, help="taken"),))

    registry.register_method(Clash)
    code, _, stderr = invoke("compile", "--help")
    assert code == 2 and "method 'clash' declares --seed, which `qcompile compile` already uses" in stderr
    assert "give that option another flag in the cli_options of method 'clash'" in stderr


@pytest.mark.parametrize("option, message", [
    (dict(flag="meta", key="meta"), "flags start with '--'"),
    (dict(flag="--x/--no-x", key="x"), "an on/off switch is type=bool"),
    (dict(flag="--x", key="x", type=bool), "an on/off switch is type=bool"),
    (dict(flag="--x", key="x", type=int, choices=("a",)), "choices are strings"),
    (dict(flag="--x", key="x", min=0), "a lower bound needs type int or float"),
    (dict(flag="--x", key="x", type=list), "type must be one of"),
])
def test_bad_option_declarations_fail_when_declared(option, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        CliOption(help="", **option)


def test_an_option_declared_twice_fails():
    with pytest.raises(ValueError, match="twice"):
        CliOptions(options=(CliOption("--x", "x", help=""), CliOption("--y", "x", help="")))


# ----------------------------------------------------------------------------- cheap --help
HELP_IMPORTS = textwrap.dedent("""
    import json, sys
    from click.testing import CliRunner
    from qcompile.cli.main import cli

    texts = [CliRunner().invoke(cli, args).output for args in (["--help"], ["compile", "--help"], ["inspect", "--help"])]
    print(json.dumps({"texts": texts, "torch": any(m.split(".")[0] == "torch" for m in sys.modules),
                      "methods": sorted(m for m in sys.modules if m.startswith("qcompile.methods"))}))
""")


def test_help_lists_method_options_without_importing_torch_or_the_methods(tmp_path):
    done = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert all(all(flag in text for flag in ("--meta-chunk-size", "--data-free", "--uq-mode"))
               for text in report["texts"][1:])
    assert report["torch"] is False
    assert report["methods"] == ["qcompile.methods", "qcompile.methods.base", "qcompile.methods.cli_options",
                                 "qcompile.methods.dynadfq", "qcompile.methods.dynadfq.options",
                                 "qcompile.methods.metaquant", "qcompile.methods.metaquant.options",
                                 "qcompile.methods.registry", "qcompile.methods.universal",
                                 "qcompile.methods.universal.options"]


def test_builtin_options_read_without_import_are_the_methods_own():
    from qcompile.methods.metaquant import MetaQuant, MetaQuantOptions

    assert cli_options("metaquant") is MetaQuant.cli_options
    fields = set(MetaQuantOptions.__dataclass_fields__)
    assert {o.key for o in MetaQuant.cli_options.options} == fields


# ----------------------------------------------------------------------------- the core names no method
ALLOWED = {"README.md", "qcompile/methods/registry.py"}
SKIPPED_FOLDERS = {"docs", "tests", "benchmarks", "qcompile/methods/metaquant"}


def test_no_method_is_named_outside_its_folder_the_registry_and_docs():
    """Only the registry (and docs, tests, benchmarks) may name a built-in method: the core reaches
    methods through the hooks, so a new method never needs a core edit."""
    tracked = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    assert tracked.returncode == 0, tracked.stderr
    files = [f for f in tracked.stdout.splitlines()
             if f not in ALLOWED and not any(f == d or f.startswith(d + "/") for d in SKIPPED_FOLDERS)]
    assert "cli/options.py" in files and "qcompile/run_dir.py" in files and "qcompile/api.py" in files
    naming = [f for f in files if (ROOT / f).is_file() and re.search(
        "metaquant", (ROOT / f).read_text(errors="ignore"), re.IGNORECASE)]
    assert naming == []
