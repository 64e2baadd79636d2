"""A typed service: its own settings in the kernel's layers, checked by ``mypy --strict``.

Run it with ``python examples/typed_service.py`` (Ctrl-C drains and exits), or set
``RONK_APP__GREETING=hi`` / ``--set app.every=250ms`` to see the layers at work.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from ron_kernel import Config, KernelEvent
from ron_kernel.kernel import Kernel
from ron_kernel.logging import get_logger
from ron_kernel.supervisor import ChildContext


@dataclass(frozen=True)
class Settings:
    """This service's settings: ``[app]`` in Config.toml, ``RONK_APP__*``, ``--set app.*``."""

    greeting: str = "hello"
    every: timedelta = timedelta(seconds=1)


Ctx = ChildContext[Config[Settings]]


async def greeter(ctx: Ctx) -> None:
    """Greet at the configured pace; a reload changes both on the next beat."""
    log = get_logger("greeter")
    ctx.ready()
    while await ctx.sleep(ctx.config.app.every.total_seconds()):
        settings: Settings = ctx.config.app  # typed: Config[Settings].app is Settings
        log.info("greeting", text=settings.greeting)


async def watcher(ctx: Ctx) -> None:
    """Log every applied reload of the typed config and every crash on the kernel bus."""
    log = get_logger("watcher")
    rx = ctx.bus.subscribe()  # Bus[KernelEvent], not Optional
    ctx.ready()
    async for cfg in ctx.config_changes():
        log.info("settings_changed", greeting=cfg.app.greeting, version=cfg.version)
        for event in rx.try_recv_many():
            if isinstance(event, KernelEvent.ServiceCrashed):
                log.warning("crash_seen", child=event.service)


def build(kernel: Kernel[Settings]) -> None:
    """Add the service's children (the shape ``ron-kernel run --app`` factories have)."""
    kernel.supervise("greeter", greeter)
    kernel.supervise("watcher", watcher, depends_on=("greeter",))


async def main() -> None:
    """Run until Ctrl-C / SIGTERM, then drain."""
    kernel = Kernel(app_config=Settings)
    build(kernel)
    await kernel.run()


if __name__ == "__main__":
    asyncio.run(main())
