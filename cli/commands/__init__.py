"""One module per command group; each command computes a plain dict and says how to render it.

Heavy imports (torch, the API, onnxruntime) happen inside the command functions, never at module import,
so that ``qcompile --help`` is instant and the runtime commands stay torch-free.
"""
