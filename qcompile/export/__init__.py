"""Back end: freeze a quantized GraphModule, export it to standard ONNX, and lower it.

    FreezeForExport (torch.fx)  →  torch.onnx.export (dynamo)  →  onnx_passes (onnx_ir)  →  checker

``onnx_export.export_onnx`` runs the whole chain into one ``.onnx`` file (``export_graph`` stops before
writing, for bundles); ``artifact`` writes the manifest and bundles; ``size.size_report`` (the
runtime's, re-exported) measures what was written.
This package file imports nothing so that ``qcompile.export.size`` stays usable without torch.
"""
