"""Presentation for the perf rigs: a rich progress bar, a summary table, matplotlib plots.

Measuring code stays plain (results are dicts of numbers); this module only shows them.
``rich`` and ``matplotlib`` come with the ``perf`` (and ``dev``) extra and are imported lazily.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import write_json


class Steps:
    """A progress handle: call :meth:`advance` after each measured step."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, description: str | None = None) -> None:
        """Mark one step done (optionally naming the next one)."""
        if self._progress is None:
            return
        if description is not None:
            self._progress.update(self._task, description=description)
        self._progress.advance(self._task)


@contextlib.contextmanager
def progress(total: int, description: str, *, enabled: bool = True) -> Iterator[Steps]:
    """Show a rich progress bar on stderr for ``total`` steps (nothing when disabled)."""
    if not enabled:
        yield Steps(None, None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stderr)
    with Progress(TextColumn("{task.description:<40}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield Steps(bar, task)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a summary table (rich) to stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    console = Console()
    if not console.is_terminal:
        # piped into a file or CI log: rich would fold to 80 columns and truncate the names
        console = Console(width=200)
    console.print(table)


def print_ratios(results: dict[str, Any], title: str = "Ratios vs the same-run baseline") -> None:
    """Print the rig's ratio table: measure, kernel figure, baseline figure, ratio, gate class."""
    detail: dict[str, dict[str, Any]] = results.get("ratio_detail", {})
    rows = [(name, d["unit"], d["kernel"], d["baseline"], results["ratios"][name],
             results["ratio_classes"][name], d["better"])
            for name, d in detail.items()]
    print_table(title, ["ratio (kernel / baseline)", "unit", "kernel", "baseline", "ratio",
                        "class", "better"], rows)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass
class Panel:
    """One plot: lines (x/y series) or distributions (samples per name)."""

    title: str
    xlabel: str
    ylabel: str
    lines: Mapping[str, tuple[Sequence[float], Sequence[float]]] = field(default_factory=dict)
    distributions: Mapping[str, Sequence[float]] = field(default_factory=dict)
    logy: bool = False
    logx: bool = False


def save_plot(path: Path, suptitle: str, panels: Sequence[Panel]) -> Path:
    """Draw ``panels`` (two per row) into a PNG at ``path`` and return the path.

    Box plots show the median, the quartiles (box) and p1..p99 (whiskers); log axes keep
    plain numbers on their ticks (``8`` and ``20``, not ``2^3`` and ``2x10^1``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1000 else f"{v:g}")
    cols = min(len(panels), 2)
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.4 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_title(panel.title, fontsize="medium")
        xs_seen: set[float] = set()
        for name, (xs, ys) in panel.lines.items():
            ax.plot(list(xs), list(ys), marker="o", label=name)
            xs_seen.update(float(x) for x in xs)
        xlabel = panel.xlabel
        if panel.distributions:
            data = [list(v) for v in panel.distributions.values() if len(v)]
            labels = [k for k, v in panel.distributions.items() if len(v)]
            if data:
                # whiskers at p1/p99: the tail is what a latency plot is for
                ax.boxplot(data, showfliers=False, whis=(1, 99))
                ax.set_xticks(range(1, len(labels) + 1), labels, fontsize="small")
                xlabel += "   (box p25-p75, line median, whiskers p1-p99)"
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.ylabel)
        if panel.logy:
            ax.set_yscale("log")
            # 1-2-5 ticks: a range inside one decade still gets labelled ticks
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(NullFormatter())
        if panel.logx:
            ax.set_xscale("log", base=2)
            if xs_seen:
                ax.set_xticks(sorted(xs_seen))
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(NullFormatter())
        if panel.lines:
            ax.legend(fontsize="small")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(suptitle)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def rig_main(rig: str, parser: Any, run: Callable[[Any], dict[str, Any]],
             report: Callable[[dict[str, Any]], str],
             plot: Callable[[dict[str, Any], Path], Path],
             argv: list[str] | None) -> dict[str, Any]:
    """The shared entry point of every rig: run, print the report and the ratio table, then
    optionally draw the plot (``--plot``) and write the JSON document (``--json``)."""
    args = parser.parse_args(argv)
    results = run(args)
    print(report(results))
    print_ratios(results)
    if args.plot:
        print(f"plot: {plot(results, args.plot)}")
    return write_json(args.json, rig, results)


def target_lines(title: str, targets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Lines of a rig's "Targets" block: each measure, its value, its target and met/MISSED."""
    width = max((len(key) for key in targets), default=0) + 2
    lines = ["", f"Targets ({title}; reported, not asserted)"]
    for key, t in targets.items():
        lines.append(f"  {key:<{width}}{t['value']:>14,.3f}  target {t['target']:>12,.2f}  "
                     f"{'met' if t['met'] else 'MISSED'}")
    return lines
