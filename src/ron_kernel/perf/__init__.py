"""Perf rigs: ``python -m ron_kernel.perf.<rig>`` (and ``ron-kernel perf <rig>``).

Each rig measures the kernel part and, in the same run, the common Python idiom it replaces,
and reports ratios, so results stay meaningful on a noisy machine.
"""
