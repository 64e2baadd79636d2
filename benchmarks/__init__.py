"""Perf rigs and the soak, run from the repository root: ``python -m benchmarks.<rig>``.

Not part of the installed package (the wheel holds only ``ron_kernel``): ``make perf``,
``make perf-check``, ``make perf-baseline``, ``make soak`` and ``make soak-smoke`` run them.

Each rig measures the kernel part and, in the same run, the common Python idiom it replaces,
and reports ratios, so results stay meaningful on a noisy machine.
"""
