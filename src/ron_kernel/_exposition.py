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
this format (they are escaped), so ``"\\n# HELP "`` only ever starts a family. A leaf module.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["add_labels", "family_names", "merge", "split_families"]

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
