"""``python -m ron_kernel``: the same as the ``ron-kernel`` command."""

from ron_kernel.cli import main

raise SystemExit(main())
