"""``python -m qcompile ...``: the CLI, also as ``torchrun --nproc-per-node N -m qcompile compile|finetune ...``."""

from qcompile.cli.main import main

main()
