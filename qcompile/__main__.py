"""``python -m qcompile ...``: the CLI, also as ``torchrun --nproc-per-node N -m qcompile compile|finetune ...``."""

import os

from qcompile.cli.main import main

if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # one rank of several, started by torchrun
    from qcompile.distributed import run_rank

    run_rank(main)
else:
    main()
