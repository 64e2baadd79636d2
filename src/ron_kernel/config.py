"""Hot-reloadable configuration: :class:`ConfigCell`, CLI integration and ``explain``.

``ron_kernel.Config`` is the immutable snapshot; a :class:`ConfigCell` holds the current one and
replaces it, whole, when a reload validates::

    cell = ConfigCell(Config.load(), bus=bus, metrics=metrics)
    remove = cell.install_sighup()          # SIGHUP -> cell.request_reload() (coalesced)
    task = cell.start_watching()            # file content change -> cell.request_reload()
    cell.get().log.level
    cell.status().watcher                   # "watching", "waiting_for_directory", ...

See docs/CONFIG.md for the sources, the keys and which changes apply at once.
"""

from ._config_cell import AmnesiaConfig as AmnesiaConfig
from ._config_cell import BusConfig as BusConfig
from ._config_cell import ConfigCell as ConfigCell
from ._config_cell import ConfigStatus as ConfigStatus
from ._config_cell import ExplainedValue as ExplainedValue
from ._config_cell import FederationConfig as FederationConfig
from ._config_cell import LogConfig as LogConfig
from ._config_cell import ObservabilityConfig as ObservabilityConfig
from ._config_cell import PqConfig as PqConfig
from ._config_cell import ReloadRecord as ReloadRecord
from ._config_cell import ShutdownConfig as ShutdownConfig
from ._config_cell import SupervisorConfig as SupervisorConfig
from ._config_cell import WorkersConfig as WorkersConfig
from ._config_cell import add_config_arguments as add_config_arguments
from ._config_cell import config_argv as config_argv
from ._config_cell import explain as explain
from ._config_cell import format_duration as format_duration
from ._config_cell import parse_duration as parse_duration
from ._config_cell import reload_class as reload_class

__all__ = [
    "AmnesiaConfig",
    "BusConfig",
    "ConfigCell",
    "ConfigStatus",
    "ExplainedValue",
    "FederationConfig",
    "LogConfig",
    "ObservabilityConfig",
    "PqConfig",
    "ReloadRecord",
    "ShutdownConfig",
    "SupervisorConfig",
    "WorkersConfig",
    "add_config_arguments",
    "config_argv",
    "explain",
    "format_duration",
    "parse_duration",
    "reload_class",
]
