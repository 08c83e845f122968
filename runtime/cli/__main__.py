"""``python -m qcompile.runtime.cli``: the ``qcompile-runtime`` command without its console script."""

from qcompile.runtime.cli.main import main

raise SystemExit(main())
