"""``qcompile-runtime``: the torch-free commands of a deployment machine.

argparse and plain text only, so the command line needs nothing beyond the runtime's numpy and
onnxruntime. Each command is a :class:`~qcompile.runtime.cli.command.Subcommand` listed once in
:data:`qcompile.runtime.cli.main.SUBCOMMANDS`; its work is a runtime function returning a plain dict,
the same one the compiler's ``qcompile`` command of that name calls. The contract is the compiler
CLI's: ``--help`` and ``--json`` everywhere; exit 0 on success, 2 for an error the user can fix
(message plus "How to fix: ..."), 1 for a bug (traceback with ``--debug``).
"""
