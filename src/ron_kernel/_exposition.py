"""Prometheus text exposition (format 0.0.4), cut and joined by family without parsing samples.

Worker processes render their own ``/metrics`` text; the parent serves one page. Text from
several processes cannot simply be concatenated: a family (its ``# HELP``/``# TYPE`` lines and
its samples) must appear once. Both steps here work on whole families, never on individual
sample values:

* :func:`add_labels` puts constant labels (``pool="web",worker="0"``) into every sample line
  of one process's text (the worker does it, before sending);
* :func:`merge` joins several texts family by family: each family's header once (the first
  text that has it wins), then its samples from every text in order.

A family starts at a ``# HELP`` line; label values and help texts never hold a raw newline in
this format (they are escaped), so ``"\\n# HELP "`` only ever starts a family.
:class:`TextWriter` renders prometheus_client families as ``generate_latest`` does, faster,
with constant labels added. A leaf module (prometheus_client only).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

__all__ = ["TextWriter", "add_labels", "family_names", "merge", "split_families"]

_HELP = "# HELP "
_TYPE = "# TYPE "


def split_families(text: str) -> list[tuple[str, str, str]]:
    """``[(name, header, samples), ...]`` in order; ``header`` holds the HELP and TYPE lines.

    Lines before the first ``# HELP`` (not produced by prometheus_client or the kernel) form a
    family named ``""`` with an empty header, so nothing is lost.
    """
    chunks = ("\n" + text).split("\n" + _HELP)
    out: list[tuple[str, str, str]] = []
    lead = chunks[0].strip("\n")
    if lead:
        out.append(("", "", lead + "\n"))
    for chunk in chunks[1:]:
        newline = chunk.find("\n")
        help_line, rest = (chunk, "") if newline < 0 else (chunk[:newline], chunk[newline + 1:])
        space = help_line.find(" ")
        name = help_line if space < 0 else help_line[:space]
        header = _HELP + help_line + "\n"
        if rest.startswith(_TYPE):
            newline = rest.find("\n")
            type_line, rest = (rest, "") if newline < 0 else (rest[:newline], rest[newline + 1:])
            header += type_line + "\n"
        rest = rest.rstrip("\n")
        out.append((name, header, rest + "\n" if rest else ""))
    return out


def family_names(text: str) -> list[str]:
    """The family names of ``text`` in order (``""`` for lines before the first family)."""
    return [name for name, _, _ in split_families(text)]


def merge(texts: Iterable[str]) -> str:
    """One exposition holding every family of ``texts`` once, samples in text order."""
    headers: dict[str, str] = {}
    samples: dict[str, list[str]] = {}
    for text in texts:
        for name, header, body in split_families(text):
            found = samples.get(name)
            if found is None:
                headers[name] = header
                samples[name] = [body]
            else:
                found.append(body)
    return "".join(headers[name] + "".join(bodies) for name, bodies in samples.items())


def add_labels(text: str, labels: str) -> str:
    """``text`` with ``labels`` (``'pool="web",worker="0"'``, already escaped) in every sample.

    Comment lines pass through. A sample line ``name{a="b"} 1`` becomes
    ``name{pool="web",worker="0",a="b"} 1``; ``name 1`` becomes ``name{pool=...} 1``.
    """
    out: list[str] = []
    for line in text.split("\n"):
        if not line or line[0] == "#":
            out.append(line)
            continue
        space = line.find(" ")
        brace = line.find("{")
        if 0 <= brace and (brace < space or space < 0):
            inner = line[brace + 1:]
            sep = "" if inner.startswith("}") else ","
            out.append(f"{line[:brace + 1]}{labels}{sep}{inner}")
        elif space > 0:
            out.append(f"{line[:space]}{{{labels}}}{line[space:]}")
        else:
            out.append(line)
    return "\n".join(out)


class _One:
    """A collector of exactly one family (to have ``generate_latest`` render just that)."""

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> list[Metric]:
        return [self._family]


_OPENMETRICS_ONLY = ("_created", "_gsum", "_gcount")


class TextWriter:
    """``generate_latest``'s text format 0.0.4, with every header and line prefix computed once.

    Each ``# HELP``/``# TYPE`` header and each series' ``name{labels} `` prefix is produced the
    first time by ``generate_latest`` itself (on a one-family, one-sample stand-in), so the
    names, the label order and every escape are prometheus_client's; later renders only format
    the values. ``labels`` (e.g. ``{"pool": "web", "worker": "0"}``) are added to every
    series. The caches are bounded (cleared past 100,000 entries: label churn); two renders
    may run at once in two threads (cache reads and writes are single dict operations).
    """

    def __init__(self, labels: Mapping[str, str] | None = None) -> None:
        self._labels = dict(labels or {})
        self._headers: dict[tuple[str, str, str], str] = {}
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}

    def render(self, families: Iterable[Metric]) -> str:
        """The text of ``families`` (in order), as ``generate_latest`` would write it."""
        out: list[str] = []
        for family in families:
            name = family.name
            out.append(self._header(name, family.type, family.documentation))
            extra: dict[str, list[str]] | None = None
            for sample in family.samples:
                line = self._line(sample)
                suffix = sample.name[len(name):] if sample.name.startswith(name) else ""
                if suffix in _OPENMETRICS_ONLY:
                    # generate_latest moves these into a gauge family after this one
                    extra = extra if extra is not None else {}
                    extra.setdefault(suffix, []).append(line)
                else:
                    out.append(line)
            for suffix, lines in sorted((extra or {}).items()):
                out.append(self._header(name + suffix, "gauge", family.documentation))
                out.extend(lines)
        return "".join(out)

    def _header(self, name: str, kind: str, documentation: str) -> str:
        key = (name, kind, documentation)
        found = self._headers.get(key)
        if found is None:
            if len(self._headers) > 100_000:
                self._headers.clear()
            found = self._headers[key] = generate_latest(
                _One(Metric(name, documentation, kind))).decode()
        return found

    def _line(self, sample: Any) -> str:
        key = (sample.name, tuple(sample.labels.items()))
        prefix = self._prefixes.get(key)
        if prefix is None:
            if len(self._prefixes) > 100_000:
                self._prefixes.clear()
            prefix = self._prefixes[key] = _prefix(sample.name,
                                                   {**self._labels, **sample.labels})
        value = floatToGoString(sample.value)  # type: ignore[no-untyped-call]
        if sample.timestamp is None:
            return f"{prefix}{value}\n"
        return f"{prefix}{value} {int(float(sample.timestamp) * 1000):d}\n"


_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _prefix(name: str, labels: Mapping[str, str]) -> str:
    """``name{labels} `` exactly as ``generate_latest`` writes it (values escaped, labels
    sorted). Names outside the classic character set (which prometheus_client escapes its own
    way) are rendered by ``generate_latest`` itself, on a one-sample stand-in family."""
    if _METRIC_NAME.fullmatch(name) and all(_LABEL_NAME.fullmatch(k) for k in labels):
        inner = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}} " if inner else f"{name} "
    stand_in = Metric(name + "x", "", "gauge")  # so that the sample is an ordinary one
    stand_in.add_sample(name, dict(labels), 0.0)
    line = generate_latest(_One(stand_in)).decode().split("\n")[2]
    return line[:-len("0.0")]


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
