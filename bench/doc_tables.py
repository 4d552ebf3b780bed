"""What the experiments' renderers of docs/RESULTS.md share: a section (title, the result files it reads, the
command that wrote them, what they measure, and its renderer) and the table helpers. Each experiment defines its
SECTION beside its main(); bench/results_doc.py writes them all."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from tabulate import tabulate


@dataclass
class Section:
    title: str
    pattern: str  # glob under the results directory
    command: str
    about: str
    render: Callable[[list[tuple[str, dict]]], str]
    per_sample: bool = False  # the files hold per-sample values, so the tables carry 95% intervals


def table(rows: list, headers: list[str], floatfmt: str = ".3f") -> str:
    return tabulate(rows, headers, tablefmt="github", floatfmt=floatfmt)


def environment_line(doc: dict) -> str:
    env = doc.get("environment", {})
    return (f"{env.get('device_name', '?')}, torch {env.get('torch', '?')}, "
            f"transformers {env.get('transformers', '?')},"
            f" {env.get('torch_threads', '?')} threads, commit {str(env.get('git_commit', '?'))[:7]}")


def side_by_side(files: list[tuple[str, dict]], key: str, fmt: str) -> str:
    """One row per key of doc[key], one column per file."""
    names = list(dict.fromkeys(k for _, d in files for k in d.get(key, {})))
    rows = [[n, *(fmt.format(d[key][n]) if n in d.get(key, {}) else "" for _, d in files)] for n in names]
    return table(rows, [key, *(os.path.basename(p) for p, _ in files)])


def render_ratio_tables(files: list[tuple[str, dict]], note: Callable[[dict], str] | None = None) -> str:
    """Tokens/s, ratios and checks side by side, one column per file; `note`: a line per file under them."""
    tables = "\n\n".join([side_by_side(files, "tokens_per_second", "{:.2f}"),
                           side_by_side(files, "ratios", "{:.3f}"), side_by_side(files, "checks", "{}")])
    if note is None:
        return tables
    return tables + "\n\n" + "\n".join(f"- {os.path.basename(p)}: {note(d)}" for p, d in files)
