"""The ``qcompile`` command line (installed as ``qcompile.cli``): a thin click + rich shell over the API.

Layout: :mod:`~qcompile.cli.main` is the click group and the error boundary, :mod:`~qcompile.cli.options`
holds the flags shared between commands, :mod:`~qcompile.cli.output` turns results into rich tables or one
JSON document, and ``commands/`` has one module per command group. Nothing here imports torch at import
time: ``qcompile run`` and ``qcompile bench`` must work on a machine with only onnxruntime and numpy.
"""
