"""The properties the fuzz targets check, importable without atheris (the tests replay them)."""

from __future__ import annotations

from ron_kernel import KernelEvent


def check_event(data: bytes) -> None:
    """``KernelEvent.from_json`` decodes and round-trips, or raises ``ValueError``; nothing else."""
    try:
        event = KernelEvent.from_json(data)
    except ValueError:
        return
    assert isinstance(event, KernelEvent)
    assert KernelEvent.from_json(event.to_json()) == event
