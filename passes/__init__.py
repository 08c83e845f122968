"""Graph passes over torch.fx GraphModules (installed as ``qcompile.passes``).

Each pass is one small object in its own module: GraphModule in, GraphModule + report out
(:class:`~qcompile.passes.base.GraphPass`), runnable alone or in a
``torch.fx.passes.infra.pass_manager.PassManager`` (see :mod:`qcompile.passes.pipeline`).
"""
