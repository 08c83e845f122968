"""End to end through the public API: tiny model → QAT → packed ONNX → onnxruntime, exact parity."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import qcompile
from qcompile.quantized_ops import QuantizedOp
from qcompile.runtime import Session

from conftest import TinyBNNet


def _compiled(w_bits, a_bits, quantizer="uniform", data="digits", steps=15):
    torch.manual_seed(0)
    cm = qcompile.compile(TinyBNNet(), input_shape=(1, 1, 8, 8), w_bits=w_bits, a_bits=a_bits,
                          quantizer=quantizer, data=data, target="exact")  # the exact path's codes and opsets
    cm.finetune(epochs=1, lr=0.01, optimizer="adam", max_steps=steps, progress=False, batch_size=32)
    return cm


@pytest.mark.parametrize("w_bits,a_bits,quantizer", [
    (1, 8, "uniform"), (2, 8, "uniform"), (4, 8, "uniform"), (8, 8, "uniform"),
    (4, 4, "uniform-asym"), (2, 2, "uniform"), (1, None, "dorefa"), (1, None, "bwn"),
])
def test_ort_matches_pytorch_eval(tmp_path, w_bits, a_bits, quantizer):
    cm = _compiled(w_bits, a_bits, quantizer)
    path = tmp_path / "m.onnx"
    report = cm.export(path)
    assert report.opset == (25 if w_bits == 2 else 21)
    test = cm.data.test
    x = ((test.x - np.array(cm.data.mean, np.float32).reshape(1, -1, 1, 1))
         / np.array(cm.data.std, np.float32).reshape(1, -1, 1, 1)).astype(np.float32)
    deployable = cm.deployable()
    with torch.no_grad():
        ref = deployable(torch.from_numpy(x)).numpy()
        trained = cm.graph_module.cpu().eval()(torch.from_numpy(x)).numpy()
    ort_out = Session(path, providers="cpu").predict(x, batch_size=64)
    assert np.abs(ort_out - ref).max() <= 1e-4  # the exported model computes what PyTorch computes
    assert np.array_equal(trained, ref)  # BN attached in eval = BN folded at export, bit for bit
    assert (ort_out.argmax(1) == ref.argmax(1)).all()
    # the file's integer codes are exactly the trained ones
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    for name, m in cm.graph_module.named_modules():
        if isinstance(m, QuantizedOp):
            codes = m.weight_quantizer.codes(m.weight.detach().cpu())
            # codes bear their layer's name through CompactModel; the rest is renamed
            stored = [i for i in inits.values() if i.name == name and i.data_type in
                      (onnx.TensorProto.INT4, onnx.TensorProto.UINT4, onnx.TensorProto.INT2, onnx.TensorProto.UINT2,
                       onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
            assert stored, f"no packed codes for {name}"
            if w_bits > 1:
                decoded = onnx.numpy_helper.to_array(stored[0]).astype(np.int64).reshape(codes.codes.shape)
                assert np.array_equal(decoded, codes.codes.numpy())
            else:
                bits = np.unpackbits(onnx.numpy_helper.to_array(stored[0]), bitorder="little")[: codes.codes.numel()]
                assert np.array_equal(bits.reshape(codes.codes.shape), codes.codes.numpy())


def test_quantized_accuracy_is_close_to_float_on_digits(tmp_path):
    torch.manual_seed(0)
    cm = qcompile.compile(TinyBNNet(), input_shape=(1, 1, 8, 8), w_bits=4, a_bits=8, data="digits")
    # float pre-training of the teacher through the same loop (plain model, standard step)
    from qcompile.train import TrainConfig, finetune
    finetune(cm.float_model, cm.data.train, None, TrainConfig(epochs=8, lr=0.01, optimizer="adam",
             mean=cm.data.mean, std=cm.data.std, batch_size=32), progress=False)
    cm = qcompile.compile(cm.float_model.eval(), input_shape=(1, 1, 8, 8), w_bits=4, a_bits=8, data="digits")
    float_acc = cm.evaluate(model=cm.float_model)
    cm.finetune(epochs=2, lr=1e-3, optimizer="adam", kd_alpha=0.5, progress=False, batch_size=32)
    q_acc = cm.evaluate(model=cm.deployable())
    assert float_acc > 0.9
    assert q_acc > float_acc - 0.05


def test_mnist_end_to_end(tmp_path, shared_data):
    cm = qcompile.compile(qcompile.load_model("examples/mnist_cnn.py:build"), input_shape=(1, 1, 28, 28),
                          w_bits=4, a_bits=8, data=f"mnist:{shared_data / 'mnist'}")
    assert len(cm.data.train) == 8000 and len(cm.data.test) == 2000
    cm.finetune(epochs=1, lr=1e-3, optimizer="adam", max_steps=60, progress=False, batch_size=64)
    path = tmp_path / "mnist.onnx"
    cm.export(path)
    session = Session(path, providers="cpu")
    pred = session.predict(cm.data.test.x[:500], normalize=True).argmax(1)
    ort_acc = float((pred == cm.data.test.y[:500]).mean())
    from qcompile.data import ArrayDataset
    from qcompile.train import evaluate
    torch_acc = evaluate(cm.deployable(), ArrayDataset(cm.data.test.x[:500], cm.data.test.y[:500]),
                         mean=cm.data.mean, std=cm.data.std)["acc"]
    assert ort_acc == pytest.approx(torch_acc, abs=1e-9)
    assert ort_acc > 0.3  # well above chance (0.1) after 60 steps from scratch
