"""How pveum prints API results (PVE::CLIFormatter::print_api_result, pveum.md §1.4)."""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Sequence, TextIO

from .names import perl_true

FORMATS = ("text", "json", "json-pretty", "yaml")
PERM_FOOTER = "Permissions marked with '(*)' have the 'propagate' flag set.\n"


def to_json(data: Any) -> str:
    """JSON::XS canonical: compact, keys sorted, UTF-8 unescaped."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def to_json_pretty(data: Any) -> str:
    """JSON::XS pretty: 3-space indent and '"key" : value'."""
    return json.dumps(data, sort_keys=True, indent=3, separators=(",", " : "), ensure_ascii=False)


def print_result(out: TextIO, data: Any, kind: str, opts: Dict[str, str], columns: Sequence[str] = ()) -> None:
    """kind: 'null' | 'array' | 'object'."""
    if kind == "null" or perl_true(opts.get("quiet")):
        return
    fmt = opts.get("output-format") or "text"
    if fmt == "json":
        out.write(to_json(data) + "\n")
    elif fmt == "json-pretty":
        out.write(to_json_pretty(data) + "\n")
    elif fmt == "yaml":
        out.write(to_yaml(data))
    elif kind == "object":
        rows = [{"key": k, "value": _cell(data[k])} for k in sorted(data) if data[k] is not None]
        out.write(render_table(rows, ["key", "value"], opts))
    elif data:  # an empty array prints nothing in text format
        cols = list(columns) or sorted({k for row in data for k in row})
        rows = [{c: _cell(row.get(c)) for c in cols} for row in data]
        rows.sort(key=lambda r: r[cols[0]])
        out.write(render_table(rows, cols, opts))


def print_permissions(out: TextIO, data: Dict[str, Dict[str, int]], opts: Dict[str, str]) -> None:
    """pveum.pm $print_perm_result: a two-column table plus the '(*)' footer in text mode."""
    if (opts.get("output-format") or "text") != "text":
        print_result(out, data, "object", opts)
        return
    rows = []
    for path in sorted(data):
        privs = data[path]
        rows.append({"path": path, "permissions": "\n".join(p + (" (*)" if privs[p] else "") for p in sorted(privs))})
    if rows and not perl_true(opts.get("quiet")):
        out.write(render_table(rows, ["path", "permissions"], opts, titles={"path": "ACL path", "permissions": "Permissions"}))
    if not perl_true(opts.get("quiet")):
        out.write(PERM_FOOTER)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return to_json(value)
    return str(value)


def render_table(rows: List[Dict[str, str]], cols: List[str], opts: Dict[str, str],
                 titles: Optional[Dict[str, str]] = None) -> str:
    """An ASCII table in the layout of print_text_table (cells may span lines)."""
    titles = titles or {}
    header = [titles.get(c, c) for c in cols]
    cells = [[str(row.get(c, "")).split("\n") for c in cols] for row in rows]
    widths = [max([len(header[i])] + [len(line) for r in cells for line in r[i]]) for i in range(len(cols))]
    border, show_header = not perl_true(opts.get("noborder")), not perl_true(opts.get("noheader"))

    def line(values: List[str]) -> str:
        padded = [v.ljust(w) for v, w in zip(values, widths)]
        return ("| " + " | ".join(padded) + " |" if border else " ".join(padded).rstrip()) + "\n"

    def rule(ch: str) -> str:
        return ("+" + "+".join(ch * (w + 2) for w in widths) + "+\n") if border else ""

    text = [rule("-")]
    if show_header:
        text += [line(header), rule("=")]
    for i, row in enumerate(cells):
        if i:
            text.append(rule("-"))
        for n in range(max(len(c) for c in row)):
            text.append(line([c[n] if n < len(c) else "" for c in row]))
    text.append(rule("-"))
    return "".join(text)


# -- a small YAML emitter, enough for API results (YAML::XS style) -----------------
def to_yaml(data: Any) -> str:
    if isinstance(data, (dict, list)) and not data:
        return "--- " + ("{}" if isinstance(data, dict) else "[]") + "\n"
    if not isinstance(data, (dict, list)):
        return f"--- {_yaml_scalar(data)}\n"
    return "---\n" + "".join(_yaml_node(data, 0))


def _yaml_node(data: Any, indent: int) -> List[str]:
    pad = " " * indent
    lines: List[str] = []
    items = sorted(data.items()) if isinstance(data, dict) else list(enumerate(data))
    for key, value in items:
        lead = f"{pad}{_yaml_scalar(key)}:" if isinstance(data, dict) else f"{pad}-"
        if isinstance(value, (dict, list)) and value:
            if isinstance(data, list) and isinstance(value, dict):
                sub = _yaml_node(value, indent + 2)
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
            else:
                lines.append(lead + "\n")
                lines.extend(_yaml_node(value, indent + 2))
        elif isinstance(value, (dict, list)):
            lines.append(f"{lead} {'{}' if isinstance(value, dict) else '[]'}\n")
        else:
            lines.append(f"{lead} {_yaml_scalar(value)}\n")
    return lines


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "~"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if text == "" or re.fullmatch(r"[-+]?[0-9.]+|~|null|true|false|yes|no|on|off", text, re.I) \
            or re.match(r"[-?:,\[\]{}#&*!|>'\"%@`\s]", text) or re.search(r": | #|\s$|\n", text):
        return "'" + text.replace("'", "''") + "'"
    return text
