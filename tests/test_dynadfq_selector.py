"""The DynaDFQ bit selector: deterministic arg-max in eval, straight-through gradients, per-image widths
equal to the static configuration of each image, BitOPs with the selector's cost, soft-label training."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import qcompile
from qcompile.errors import DataError
from qcompile.methods.dynadfq.dynamic_step import mixup_easy
from qcompile.methods.dynadfq.insert_selector import FixWidths
from qcompile.methods.dynadfq.regulariser import image_bitops, target_bitops
from qcompile.methods.dynadfq.selector import BitSelector, DynamicOp
from qcompile.passes.pipeline import run_passes
from qcompile.tasks import get_task

from conftest import TinyBNNet


def dynamic_model(**options):
    torch.manual_seed(0)
    cm = qcompile.compile(TinyBNNet().eval(), input_shape=(1, 1, 8, 8), method="dynadfq",
                          method_options={"bits": "2,3,4", "target_bitops": 3.0, **options})
    x = torch.rand(32, 1, 8, 8)
    cm.graph_module.eval()
    for q in cm.activation_quantizers():  # calibrate ranges on random images
        q.train()
    cm.graph_module(x)
    for q in cm.activation_quantizers():
        q.freeze()
    with torch.no_grad():  # a selector that does not pick one width for everything
        torch.manual_seed(1)
        cm.graph_module.bit_selector.out.weight.normal_(0, 2.0)
    return cm, x


def test_eval_choices_are_deterministic_arg_max_and_counted():
    cm, x = dynamic_model()
    selector = cm.graph_module.bit_selector
    selector.eval()
    assert int(selector.chosen.sum()) == 3 * 32  # the calibration forward was counted
    selector.chosen.zero_()
    a, b = selector(x), selector(x)
    assert torch.equal(a, b) and torch.equal(a.argmax(-1), selector.logits(x).argmax(-1))
    assert a.shape == (32, 3, 3) and torch.equal(a.sum(-1), torch.ones(32, 3))
    assert torch.equal(selector.chosen, (a + b).sum(0).long())
    assert selector.most_frequent() == [selector.candidates[int(k)] for k in selector.chosen.argmax(1)]
    selector.train()
    selector(x)
    assert int(selector.chosen.sum()) == 0  # a training step resets the count


def test_gumbel_straight_through_gradient_reaches_the_selector():
    cm, x = dynamic_model()
    gm = cm.graph_module.train()
    choices = gm.bit_selector(x)
    assert torch.equal(choices.sum(-1), torch.ones(32, 3)) and set(choices.unique().tolist()) == {0.0, 1.0}
    gm.zero_grad()
    gm(x).square().mean().backward()
    assert gm.bit_selector.out.weight.grad.abs().sum() > 0 and gm.bit_selector.hidden.weight.grad.abs().sum() > 0
    gm.zero_grad()
    gm.bit_selector(x)
    image_bitops(gm).mean().backward()  # the regulariser's gradient goes through the choices too
    assert gm.bit_selector.out.weight.grad.abs().sum() > 0


def test_each_image_gets_the_output_of_its_own_static_configuration():
    cm, x = dynamic_model()
    gm = cm.graph_module.eval()
    with torch.no_grad():
        out = gm(x)  # one batch, several configurations, grouped by width in each layer
        widths = gm.bit_selector(x).argmax(-1)
    assert len({tuple(w) for w in widths.tolist()}) > 1
    for i in range(0, len(x), 5):
        static = copy.deepcopy(gm)
        static.bit_selector.chosen.copy_(torch.nn.functional.one_hot(widths[i], 3))  # image i's configuration
        static, _ = run_passes(static, [FixWidths()])
        assert not any(isinstance(m, (DynamicOp, BitSelector)) for m in static.modules())
        with torch.no_grad():
            assert torch.equal(static(x[i:i + 1]), out[i:i + 1])


def test_bitops_per_image_count_the_selector_and_each_chosen_width():
    cm, x = dynamic_model()
    gm = cm.graph_module.eval()
    macs = {s["name"]: s["macs"] for s in cm.inspect()["sites"]}
    ops = sorted((m for m in gm.modules() if isinstance(m, DynamicOp)), key=lambda m: m.index)
    names = ["conv1", "conv2", "fc"]
    assert [int(op.macs) for op in ops] == [macs[n] for n in names]  # measured = inspect's MACs
    assert gm.bit_selector.macs == 66 * 32 + 32 * 9
    choices = torch.zeros(2, 3, 3)
    choices[0, :, 0] = 1  # image 0: everything at 2 bits
    choices[1, 0, 2] = choices[1, 1, 1] = choices[1, 2, 0] = 1  # image 1: 4, 3, 2 bits
    sel = (66 * 32 + 32 * 9) * 32 * 32
    expected = [sel + 4 * sum(macs.values()), sel + 16 * macs["conv1"] + 9 * macs["conv2"] + 4 * macs["fc"]]
    assert image_bitops(gm, choices).tolist() == pytest.approx(expected)
    assert target_bitops(gm, 3.0) == pytest.approx(sel + 9 * sum(macs.values()))


def test_soft_labels_are_classification_targets():
    task = get_task("classification")
    y = np.array([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    targets = task.targets(None, y)
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    expected = -(torch.from_numpy(y) * logits.log_softmax(1)).sum(1).mean()
    assert task.loss(logits, targets, None).item() == pytest.approx(expected.item())
    assert task.batch_metrics(logits, targets)["acc"] == 0.5
    assert task.evaluation_sums(logits, targets)["acc"] == 1
    with pytest.raises(DataError, match="not probability rows"):
        task.check_targets(y * 2, logits, "train")
    with pytest.raises(DataError, match="columns"):
        task.check_targets(y[:, :2], logits, "train")


def test_mixup_blends_only_easy_images():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 4, 4)
    y = torch.zeros(64, 3)
    y[:32, 0] = 1  # easy
    y[32:] = torch.tensor([0.6, 0.4, 0.0])  # hard
    mx, my = mixup_easy(x, y, p=1.0)
    assert torch.equal(mx[32:], x[32:]) and torch.equal(my[32:], y[32:])
    assert not torch.equal(mx[:32], x[:32])
    assert torch.allclose(my.sum(1), torch.ones(64))


def test_a_selector_needs_images():
    with pytest.raises(qcompile.errors.ConfigError, match="reads images"):
        BitSelector(2, (2, 3, 4))(torch.rand(4, 10))


def test_the_dynamic_bundle_runs_per_image_in_input_order_like_pytorch(tmp_path):
    from qcompile.export.onnx_export import export_onnx
    from qcompile.methods.dynadfq import set_widths
    from qcompile.methods.dynadfq.insert_selector import remove_selector
    from qcompile.runtime import load

    cm, x = dynamic_model()
    report = cm.export(tmp_path / "dyn.qcz")
    session = load(tmp_path / "dyn.qcz", providers="cpu")
    assert type(session).__name__ == "DynamicSession" and report.file_bytes == (tmp_path / "dyn.qcz").stat().st_size
    x = torch.cat([x, 3 * torch.randn(40, 1, 8, 8)])
    gm = cm.graph_module.eval()
    with torch.no_grad():
        ref = gm(x).numpy()
        chosen = np.array(gm.bit_selector.candidates)[gm.bit_selector(x).argmax(-1).numpy()]
    order = np.random.RandomState(0).permutation(len(x))
    for batch in (1, 13, 256):
        out = session.predict(x.numpy()[order], batch_size=batch)
        assert np.abs(out - ref[order]).max() <= 1e-4
        assert np.array_equal(session.last_widths, chosen[order])
    assert len(np.unique(chosen, axis=0)) > 3  # several configurations were grouped
    r = session.dispatch_report()
    per_image = session.bitops(chosen[order])
    assert r["mean_bitops"] == pytest.approx(per_image.mean()) and r["mean_bits"] == pytest.approx(chosen.mean())
    # the file: the stored widest codes once, not one graph per configuration
    static = copy.deepcopy(gm)
    remove_selector(static)
    set_widths(static, 4)
    from qcompile.passes.pipeline import export_passes
    static, _ = run_passes(static, export_passes())
    size = export_onnx(static, (x[:2],), tmp_path / "w4.onnx").file_bytes
    import zipfile
    members = {i.filename: i.file_size for i in zipfile.ZipFile(tmp_path / "dyn.qcz").infolist()}
    assert members["model.onnx"] <= 1.5 * size + 1024, (members, size)


def test_joint_training_on_a_pool_resumes_to_the_uninterrupted_run(tmp_path):
    from qcompile.synthesis import SynthesisConfig, save_pool, synthesize

    torch.manual_seed(0)
    save_pool(synthesize(TinyBNNet(), (1, 8, 8), SynthesisConfig(images=40, batch_size=20, steps=3), mean=(0.3,),
                         std=(0.4,), device="cpu"), tmp_path / "pool.npz")

    def run(**kwargs):
        torch.manual_seed(0)
        cm = qcompile.compile(TinyBNNet().eval(), input_shape=(1, 1, 8, 8), method="dynadfq",
                              method_options={"bits": "2,3,4", "target_bitops": 2.5, "pool": str(tmp_path / "pool.npz")})
        result = cm.finetune(epochs=2, lr=1e-3, optimizer="adam", kd_alpha=0.5, batch_size=8, progress=False,
                             **kwargs)
        return cm, result

    whole, result = run()
    assert cm_targets_are_soft(whole) and "bitops_ratio" in result.step_records[-1]
    run(checkpoint_dir=tmp_path / "ck", max_steps=3)
    resumed, _ = run(checkpoint_dir=tmp_path / "ck", resume=True)
    for (name, a), (_, b) in zip(whole.graph_module.state_dict().items(), resumed.graph_module.state_dict().items()):
        assert torch.equal(a, b), name


def cm_targets_are_soft(cm) -> bool:
    return cm.data.train.y.ndim == 2 and np.allclose(cm.data.train.y.sum(1), 1.0)


def test_the_runtime_normalises_raw_images_with_the_artifacts_statistics(tmp_path):
    from qcompile.runtime import load

    cm, x = dynamic_model()
    cm.set_normalization(qcompile.runtime.normalisation.Normalization((0.3,), (0.4,), "given"))
    cm.export(tmp_path / "dyn.qcz")
    session = load(tmp_path / "dyn.qcz", providers="cpu")
    raw = np.random.RandomState(1).rand(9, 1, 8, 8).astype(np.float32)
    assert np.array_equal(session.predict(raw, normalize=True), session.predict((raw - 0.3) / np.float32(0.4)))
    with pytest.raises(qcompile.runtime.errors.InputError, match="dtype"):
        session.predict(raw.astype(np.float64))


def test_specialised_sessions_equal_the_generic_graph_bitwise_and_stay_bounded(tmp_path):
    import itertools

    from qcompile.runtime import load
    from qcompile.runtime.constant_input import with_constant_input

    cm, x = dynamic_model()
    cm.export(tmp_path / "dyn.qcz")
    session = load(tmp_path / "dyn.qcz", providers="cpu")
    session.cache_size = 4
    images = torch.cat([x, 3 * torch.randn(8, 1, 8, 8)]).numpy()
    layers = len(session.layer_names)
    for config in itertools.product(range(len(session.candidates)), repeat=layers):
        config = np.array(config)
        generic = session.run_config(images, config, specialised=False)
        assert np.array_equal(session.run_config(images, config), generic), config
        assert len(session._configs) <= 4
    widths_input = [i.name for i in session._model.get_inputs()][1]
    fixed = session._contents.engine.session(
        with_constant_input(session._contents.graph_bytes("model"), widths_input, np.zeros(layers, np.int64)), "fixed")
    assert [i.name for i in fixed.get_inputs()] == [session._x_name]  # the widths are no longer an input
    with pytest.raises(ValueError, match="no input named 'nope'"):
        with_constant_input(session._contents.graph_bytes("model"), "nope", np.zeros(layers, np.int64))
    # dispatch through the cache gives what the generic graph gives, image by image
    session.cache_size = 2
    out = session.predict(images, batch_size=7)
    chosen = session.choose(images)
    for i, config in enumerate(chosen):
        assert np.array_equal(out[i], session.run_config(images[i:i + 1], config, specialised=False)[0])


def test_the_selector_runs_and_is_stored_at_8_bits(tmp_path):
    import zipfile

    import onnx

    from qcompile.methods.dynadfq.selector import image_features, int8_weight

    cm, x = dynamic_model()
    sel = cm.graph_module.bit_selector.eval()
    codes, scale = int8_weight(sel.out.weight)
    assert codes.abs().max() == 127 and torch.equal(codes, codes.round())
    with torch.no_grad():
        h = torch.relu(torch.nn.functional.linear(image_features(x), int8_weight(sel.hidden.weight)[0]
                                                  * int8_weight(sel.hidden.weight)[1], sel.hidden.bias))
        expected = torch.nn.functional.linear(h, codes * scale, sel.out.bias).view(len(x), sel.layers, -1)
        assert torch.equal(sel.logits(x), expected)
    cm.export(tmp_path / "dyn.qcz")
    graph = onnx.load_from_string(zipfile.ZipFile(tmp_path / "dyn.qcz").read("selector.onnx")).graph
    int8 = {i.name: list(i.dims) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    assert sorted(int8.values()) == sorted([list(sel.hidden.weight.shape), list(sel.out.weight.shape)])
    assert not any(i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 2 for i in graph.initializer)


def test_selector_hidden_width_sets_the_stored_selector_size(tmp_path):
    import zipfile

    import onnx

    sizes = {}
    for hidden in (32, 4):
        cm, _ = dynamic_model(selector_hidden=hidden)
        assert cm.graph_module.bit_selector.hidden.out_features == hidden
        assert cm.graph_module.bit_selector.macs == 66 * hidden + hidden * 3 * 3
        cm.export(tmp_path / f"h{hidden}.qcz")
        graph = onnx.load_from_string(zipfile.ZipFile(tmp_path / f"h{hidden}.qcz").read("selector.onnx")).graph
        sizes[hidden] = sum(int(np.prod(i.dims)) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8)
    assert sizes == {32: 66 * 32 + 32 * 9, 4: 66 * 4 + 4 * 9}  # 3 layers x 3 widths
    with pytest.raises(qcompile.errors.ConfigError, match="from 1 to 1024"):
        dynamic_model(selector_hidden=0)
    with pytest.raises(qcompile.errors.ConfigError, match="one width"):
        qcompile.compile(TinyBNNet().eval(), input_shape=(1, 1, 8, 8), method="dynadfq",
                         method_options={"bits": "4", "selector_hidden": 8})
