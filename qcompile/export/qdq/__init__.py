"""Export of the ``ort-int8`` target: the QDQ graph onnxruntime fuses into its integer kernels.

    Q → DQ on activations (uint8; signed codes with zero point 128), DQ(packed codes) weights,
    DQ(int32) biases, BatchNorm folded, ReLU folded into an unsigned range, residual additions and the
    global average pool between Q/DQ pairs.

:mod:`.frozen` holds the frozen modules, :mod:`.freeze` the pass that puts them in the graph.
"""
