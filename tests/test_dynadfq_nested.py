"""Nested multi-width codes: the b-bit codes are the top bits of the stored codes and decode as stated."""

from __future__ import annotations

import pytest
import torch

from qcompile.errors import ConfigError
from qcompile.methods.dynadfq import MultiBitActivationQuantizer, NestedWeightQuantizer, truncate_codes


def test_a_hand_example_at_every_width():
    w = torch.tensor([[-1.0, -0.3, 0.0, 0.2, 0.55, 1.0]])
    q = NestedWeightQuantizer((2, 3, 4))
    stored = q.nested_codes(w)  # step 1/7.5: w/s = -7.5, -2.25, 0, 1.5, 4.125, 7.5
    assert stored.codes.tolist() == [[-8, -3, 0, 1, 4, 7]] and stored.bits == 4
    expected = {4: ([-8, -3, 0, 1, 4, 7], [-7.5, -2.5, 0.5, 1.5, 4.5, 7.5]),
                3: ([-4, -2, 0, 0, 2, 3], [-7.0, -3.0, 1.0, 1.0, 5.0, 7.0]),
                2: ([-2, -1, 0, 0, 1, 1], [-6.0, -2.0, 2.0, 2.0, 6.0, 6.0])}
    for bits, (codes, values) in expected.items():
        q.set_bits(bits)
        c = q.codes(w)
        assert c.codes.tolist() == [codes] and c.bits == bits and c.signed
        assert torch.allclose(c.dequantize(), torch.tensor([values]) / 7.5, atol=1e-7)
        assert torch.equal(q(w), c.dequantize())  # what training computes is what the codes decode to


@pytest.mark.parametrize("candidates", [(2, 3, 4), (2, 4, 8), (3, 5)])
def test_every_width_is_a_right_shift_of_the_stored_code(candidates):
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3) * torch.rand(16, 1, 1, 1)
    q = NestedWeightQuantizer(candidates)
    stored = q.nested_codes(w)
    top = max(candidates)
    step = (w.abs().amax(dim=(1, 2, 3)) / (2 ** (top - 1) - 0.5)).reshape(-1, 1, 1, 1)
    for bits in candidates:
        q.set_bits(bits)
        c = q.codes(w)
        c.validate()  # fits a signed `bits`-bit container: never widened
        shift = top - bits
        assert torch.equal(c.codes, stored.codes >> shift)
        assert torch.equal(c.codes, truncate_codes(stored, bits).codes)
        direct = torch.clamp(torch.floor(w / (step * 2 ** shift)), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        assert torch.equal(c.codes, direct.to(torch.int64))  # truncation = quantising at the coarser step
        decoded = (2 * (stored.codes >> shift) + 1).float() * (step * 2 ** (shift - 1))  # the stated formula
        assert torch.allclose(q(w), decoded, rtol=1e-6, atol=0)
        assert torch.equal(q(w), c.dequantize())
        per_channel_levels = max(len(torch.unique(c.codes[i])) for i in range(16))
        assert per_channel_levels <= 2 ** bits


def test_straight_through_gradient_and_width_checks():
    w = torch.tensor([[0.1, -0.4, 0.9, -1.0]], requires_grad=True)
    NestedWeightQuantizer((2, 4), bits=2)(w).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))
    for bad in ((1, 2), (4, 9), ()):
        with pytest.raises(ConfigError, match="from 2 to 8"):
            NestedWeightQuantizer(bad)
    with pytest.raises(ConfigError, match="not one of"):
        NestedWeightQuantizer((2, 4)).set_bits(3)


def test_activation_widths_share_one_frozen_range():
    q = MultiBitActivationQuantizer((2, 3, 4), signed=False)
    q.train()
    x = torch.linspace(0, 3.0, 31)
    q(x)
    q.freeze()
    assert q.scale().item() == pytest.approx(3.0 / 15)
    q.set_bits(2)
    assert (q.qmin, q.qmax) == (0, 3) and q.scale().item() == pytest.approx(3.0 / 3)
    q(x * 10)  # frozen: the range does not move
    assert q.running_max.item() == pytest.approx(3.0)
    codes = q.codes(x)
    assert codes.codes.min().item() == 0 and codes.codes.max().item() == 3 and codes.bits == 2
    assert q(torch.zeros(3)).eq(0).all()  # an exact zero at every width
    signed = MultiBitActivationQuantizer((2, 4), signed=True, bits=2)
    assert (signed.qmin, signed.qmax) == (-2, 1)


def test_bitops_on_a_known_graph():
    import qcompile
    from qcompile.methods.dynadfq import bitops, layer_costs

    from conftest import TinyBNNet

    cm = qcompile.compile(TinyBNNet(), input_shape=(1, 1, 8, 8), method="dynadfq", method_options={"bits": "4"})
    costs = layer_costs(cm.inspect()["sites"])
    # conv1 1→8 3×3 on 8×8: 8·9·64; conv2 8→16 3×3 stride 2 → 4×4: 16·8·9·16; fc 16→10
    assert [(c.name, c.macs) for c in costs] == [("conv1", 4608), ("conv2", 18432), ("fc", 160)]
    assert bitops(costs) == (4608 + 18432 + 160) * 4 * 4
    assert bitops(costs, {"conv2": (2, 3)}) == (4608 + 160) * 16 + 18432 * 6
    assert costs[0].bitops(None, None) == 4608 * 16
    float_costs = layer_costs(qcompile.compile(TinyBNNet(), input_shape=(1, 1, 8, 8), w_bits=4, a_bits=None)
                              .inspect()["sites"])
    assert bitops(float_costs) == (4608 + 18432 + 160) * 4 * 32  # float inputs count 32 bits
    with pytest.raises(KeyError, match="conv9"):
        bitops(costs, {"conv9": (2, 2)})


class _MultiWidth:
    """A test plug-in whose every layer has candidates {2,3,4} (the dynadfq method accepts one width so far)."""

    @staticmethod
    def register():
        from qcompile.methods import Method, register_method

        class MultiWidth(Method):
            name = "test-multi-width"

            def weight_quantizer(self, site):
                return NestedWeightQuantizer((2, 3, 4))

            def activation_quantizer(self, site, signed):
                return MultiBitActivationQuantizer((2, 3, 4), signed=signed)

        register_method(MultiWidth)


def test_any_configuration_exports_its_nested_codes_exactly(tmp_path):
    import numpy as np
    import onnx

    import qcompile
    from qcompile.methods.dynadfq import current_widths, multi_width_layers, set_widths
    from qcompile.runtime import Session

    from conftest import TinyBNNet

    _MultiWidth.register()
    torch.manual_seed(0)
    cm = qcompile.compile(TinyBNNet(), input_shape=(1, 1, 8, 8), method="test-multi-width", data="digits")
    layers = multi_width_layers(cm.graph_module)
    stored = {name: op.weight_quantizer.nested_codes(op.weight.detach()).codes for name, op in layers.items()}
    assert current_widths(cm.graph_module) == {"conv1": (4, 4), "conv2": (4, 4), "fc": (4, 4)}
    x = ((cm.data.test.x[:64] - np.float32(cm.data.mean[0])) / np.float32(cm.data.std[0])).astype(np.float32)
    for config in ({"conv1": (2, 4), "conv2": (3, 2), "fc": (4, 3)}, 2):
        set_widths(cm.graph_module, config)
        expected = config if isinstance(config, dict) else {name: (2, 2) for name in layers}
        assert current_widths(cm.graph_module) == expected
        path = tmp_path / "m.onnx"
        cm.export(path)
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
        for name, (w_bits, _) in expected.items():
            assert np.array_equal(inits[name].astype(np.int64).reshape(stored[name].shape),
                                  (stored[name] >> (4 - w_bits)).numpy())  # one stored code, truncated
        with torch.no_grad():
            ref = cm.deployable()(torch.from_numpy(x)).numpy()
        assert np.abs(Session(path, providers="cpu").predict(x) - ref).max() <= 1e-4
    with pytest.raises(ConfigError, match="not a candidate"):
        set_widths(cm.graph_module, {"conv1": (5, 4), "conv2": (4, 4), "fc": (4, 4)})
    with pytest.raises(ConfigError, match="missing"):
        set_widths(cm.graph_module, {"conv1": (4, 4)})
    assert current_widths(cm.graph_module)["conv1"] == (2, 2)  # a refused configuration changes nothing
