"""pve.yml (prometheus-pve-exporter's modules): merge one module into the file a user already has.

Text level, so every other module stays byte for byte what the user wrote; inside our module the
keys pvemond writes are replaced in place and everything else the user put there (more keys such
as `timeout: 20`, comments) is kept. What a line scan cannot map safely is refused with the line
and the fix, never guessed at. Stdlib only: pvemond-claim runs it on any monitoring host.
"""
from __future__ import annotations

import re

from pvemond.records import record

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays unloaded: pvemond/records.py says why
    from typing import Optional

# patterns, compiled (and cached by re) on first use: most claims never merge a file
_DOC_START = r"---(?:[ \t]+(?:#.*)?)?"
_ANCHOR = r"(?:^|[\s\[{,])&([^\s,\[\]{}]+)"
_FIX = "fix pve.yml by hand, or write to a new file with -o"


class MergeError(ValueError):
    """The existing pve.yml cannot be merged safely; names the line and the fix."""


def _fail(lineno: int, problem: str) -> MergeError:
    return MergeError(f"existing pve.yml, line {lineno}: {problem}; {_FIX}")


@record
class _Layout:
    indent: int                     # column of the top-level keys (normally 0)
    keys: list[tuple[int, str]]     # (line index, decoded key) of each top-level key


@record
class Block:
    """Our module as pvemond renders it: comment lines, the key line, `key: value` settings."""
    comments: list[str]
    key_line: str
    settings: list[tuple[str, str]]  # (key, rendered value)


def merge(existing: str, module: str, block: Block, ours: tuple[str, ...] = ()) -> str:
    """`existing` with module `module` merged from `block` (or `block` appended), the rest
    untouched. Comment lines starting with one of `ours` right above the module are pvemond's
    own header and are replaced."""
    bom = "\ufeff" if existing.startswith("\ufeff") else ""
    text = existing[len(bom):]
    _check_line_breaks(text)
    nl = "\r\n" if "\r\n" in text else "\n"
    lines = _split_lines(text)
    layout = _scan(lines)
    found = [i for i, key in layout.keys if key == module]
    if len(found) > 1:
        raise _fail(found[1] + 1, f"module {module!r} is defined twice (also line {found[0] + 1}); "
                    "delete one")
    pad = " " * layout.indent
    if not found:
        return bom + _append(text, "".join(pad + line + nl for line in render(block)), nl)
    start, end = _module_span(lines, layout, found[0], ours)
    _check_anchors(lines, start, end)
    head = [pad + c + nl for c in block.comments]
    body = _merge_body(lines, found[0], end, layout.indent, block, nl)
    return bom + "".join(lines[:start]) + "".join(head) + "".join(body) + "".join(lines[end:])


def render(block: Block) -> list[str]:
    """The block as lines (no line ends), for a new file."""
    return [*block.comments, block.key_line, *(f"  {k}: {v}" for k, v in block.settings)]


# ---------------------------------------------------------------------------------------------
# Inside our module

@record
class _Child:
    key: str
    comment: str   # an inline comment on the key's line ('' if none)


def _merge_body(lines: list[str], key_index: int, end: int, indent: int, block: Block,
                nl: str) -> list[str]:
    """Our key line and settings, with the user's own lines kept where they were."""
    first = lines[key_index].rstrip("\r\n")
    comment = _key_line_comment(first[indent:], key_index + 1, block.key_line)
    out = [" " * indent + block.key_line + (f"  {comment}" if comment else "") + nl]
    managed = dict(block.settings)
    items, child_col = _children(lines, key_index, end, indent, managed)
    col = child_col if child_col is not None else indent + 2
    seen = [item.key for item in items if isinstance(item, _Child)]
    missing = [k for k, _ in block.settings if k not in seen]

    def ours(key: str, comment: str = "") -> str:
        return " " * col + f"{key}: {managed[key]}" + (f"  {comment}" if comment else "") + nl

    if not seen:
        out += [ours(k) for k in missing]
    last = max((i for i, item in enumerate(items) if isinstance(item, _Child)), default=-1)
    for i, item in enumerate(items):
        out.append(ours(item.key, item.comment) if isinstance(item, _Child) else item)
        if i == last:
            out += [ours(k) for k in missing]
    return out


def _children(lines: list[str], key_index: int, end: int, indent: int,
              managed: dict[str, str]) -> tuple[list, Optional[int]]:
    """The module's lines after its key: a _Child for each of our settings (its old value
    dropped), the raw line for everything else (the user's keys, their values, comments)."""
    items: list = []
    child_col: Optional[int] = None
    in_ours = False  # inside the value of one of our settings (a multi-line value)
    for i in range(key_index + 1, end):
        raw = lines[i]
        line = raw.rstrip("\r\n")
        body = line.lstrip(" ")
        if not body.strip(" \t") or body.startswith("#"):
            items.append(raw)  # a blank line or a comment: the user's, kept where it is
            continue
        col = len(line) - len(body)
        child_col = col if child_col is None else child_col
        if col > child_col:
            if not in_ours:
                items.append(raw)
            continue
        if col < child_col:
            raise _fail(i + 1, f"indented less than the line above it (column {child_col + 1})")
        key, rest = _key(body, i + 1, "in a module")
        in_ours = key in managed
        if not in_ours:
            items.append(raw)
        elif any(isinstance(item, _Child) and item.key == key for item in items):
            raise _fail(i + 1, f"setting {key!r} appears twice in the module; delete one")
        else:
            items.append(_Child(key, _inline_comment(rest[1:])))
    return items, child_col


def _key_line_comment(body: str, lineno: int, key_line: str) -> str:
    """The inline comment of our module's key line; its value must start on the next line."""
    _, rest = _key(body, lineno, "at the top level")
    after = rest[1:].strip(" \t")
    anchor = re.match(r"&[^\s]+\s*", after)  # an anchor nobody else uses (_check_anchors)
    after = after[anchor.end():] if anchor else after
    if after and not after.startswith("#"):
        raise _fail(lineno, f"the module's settings follow '{key_line}' on the same line "
                    "(flow style or an alias), so pvemond cannot keep them; write them indented "
                    "below, one 'key: value' per line")
    return after


def _inline_comment(value: str) -> str:
    """The `# ...` after a value on its line, else ''."""
    value = value.strip(" \t")
    if value[:1] in "\"'":
        decoded = (_double_quoted if value[0] == '"' else _single_quoted)(value)
        rest = decoded[1].strip(" \t") if decoded else ""
        return rest if rest.startswith("#") else ""
    if value.startswith("#"):
        return value
    m = re.search(r"[ \t]#", value)
    return value[m.start():].strip(" \t") if m else ""


# ---------------------------------------------------------------------------------------------
# The file's top level

def _check_line_breaks(text: str) -> None:
    # YAML also breaks lines at a lone CR, NEL, LS and PS; the scan below only knows LF and CRLF.
    m = re.search("\r(?!\n)|[\x85\u2028\u2029]", text)
    if m:
        raise _fail(text.count("\n", 0, m.start()) + 1,
                    "line break other than LF or CRLF (lone CR, NEL, LS or PS)")


def _split_lines(text: str) -> list[str]:
    """Lines with their endings; "".join() gives `text` back exactly."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def _append(text: str, new: str, nl: str) -> str:
    if text and not text.endswith("\n"):
        text += nl
    if text.strip() and not text.endswith(nl + nl):
        text += nl  # a blank line between the last module and ours
    return text + new


def _scan(lines: list[str]) -> _Layout:
    """Find the top-level keys, refusing what a line scan cannot map safely."""
    indent: Optional[int] = None
    keys: list[tuple[int, str]] = []
    for i, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        body = line.lstrip(" ")
        if not body.strip(" \t") or body.startswith("#"):
            continue  # blank or comment: belongs to no module's data
        if body.startswith("\t"):
            raise _fail(i + 1, "tab in the indentation (YAML allows spaces only); "
                        "replace the tabs with spaces")
        if _is_doc_marker(line, indent, i):
            continue
        col = len(line) - len(body)
        indent = col if indent is None else indent
        if col < indent:
            raise _fail(i + 1, f"indented less than the first module (column {indent + 1})")
        if col == indent:
            keys.append((i, _key(body, i + 1, "at the top level")[0]))
    return _Layout(indent or 0, keys)


def _is_doc_marker(line: str, indent: Optional[int], i: int) -> bool:
    """A leading `%YAML`/`---` is fine; a second document or `...` is not."""
    if indent is None and (line.startswith("%") or re.fullmatch(_DOC_START, line)):
        return True
    if re.match(r"(---|\.\.\.)(\s|$)", line):
        raise _fail(i + 1, "a second YAML document or a document end marker ('---' or '...'); "
                    "pve.yml must be one mapping of modules")
    return False


def _key(body: str, lineno: int, where: str) -> tuple[str, str]:
    """The decoded key of a `key: ...` line, and the text from its colon on."""
    if re.match(r"[-?](\s|$)", body):
        what = "a list item ('- ')" if body[0] == "-" else "a complex key ('? ')"
        raise _fail(lineno, f"{what} {where}; pve.yml must map module names to settings")
    if body[0] in "[{":
        raise _fail(lineno, f"a flow collection ('[' or '{{') {where}; write the modules "
                    "in block style, one 'name:' line each")
    if body[0] in "\"'":
        key, rest = _quoted(body, lineno)
    elif body[0] in "&*!|>%@`":
        raise _fail(lineno, f"unsupported syntax {body[0]!r} {where}; expected a 'name:' line")
    else:
        key, rest = _plain(body, lineno)
    if not re.match(r"\s*:(\s|$)", rest):
        raise _fail(lineno, "expected a 'name:' line for a module")
    return key, rest.lstrip(" \t")


def _plain(body: str, lineno: int) -> tuple[str, str]:
    m = re.search(r":(?=\s|$)", body)
    key = body[:m.start()].rstrip(" \t") if m else ""
    if not m or not key or re.search(r"\s#", key):
        raise _fail(lineno, "expected a 'name:' line for a module (is a value continued "
                    "at the left margin?)")
    return key, body[m.start():]


_DQ_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v",
               "f": "\f", "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\",
               "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029"}
_DQ_HEX = {"x": 2, "u": 4, "U": 8}


def _quoted(body: str, lineno: int) -> tuple[str, str]:
    """A quoted key on one line: (decoded key, text after the closing quote)."""
    decode = _double_quoted if body[0] == '"' else _single_quoted
    result = decode(body)
    if result is None:
        raise _fail(lineno, "a quoted key that does not close on its line")
    return result


def _double_quoted(body: str) -> Optional[tuple[str, str]]:
    out, i = [], 1
    while i < len(body):
        c = body[i]
        if c == '"':
            return "".join(out), body[i + 1:]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        esc = body[i + 1:i + 2]
        if esc in _DQ_HEX:
            digits = body[i + 2:i + 2 + _DQ_HEX[esc]]
            if len(digits) != _DQ_HEX[esc] or not re.fullmatch(r"[0-9A-Fa-f]+", digits):
                return None
            out.append(chr(int(digits, 16)))
            i += 2 + len(digits)
        elif esc in _DQ_ESCAPES:
            out.append(_DQ_ESCAPES[esc])
            i += 2
        else:
            return None
    return None


def _single_quoted(body: str) -> Optional[tuple[str, str]]:
    m = re.match(r"'((?:[^']|'')*)'", body)
    return (m.group(1).replace("''", "'"), body[m.end():]) if m else None


def _module_span(lines: list[str], layout: _Layout, key_index: int,
                 ours: tuple[str, ...]) -> tuple[int, int]:
    """[start, end) of our module: our own header comment, the key line and everything indented
    under it; left-margin comments and blank lines after it belong to what follows."""
    following = [i for i, _ in layout.keys if i > key_index]
    end = following[0] if following else len(lines)
    while end > key_index + 1 and not _inside(lines[end - 1], layout.indent):
        end -= 1
    start = key_index
    while ours and start > 0 and lines[start - 1].strip().startswith(ours):
        start -= 1
    return start, end


def _inside(raw: str, indent: int) -> bool:
    """A line that belongs to the module above it: data, or a comment indented under the key."""
    line = raw.rstrip("\r\n")
    body = line.lstrip(" ")
    if not body.strip(" \t"):
        return False
    return not body.startswith("#") or len(line) - len(body) > indent


def _check_anchors(lines: list[str], start: int, end: int) -> None:
    # Another module may reuse ours through an anchor (`*name`, `<<: *name`); rewriting ours
    # would leave it dangling, or hand it our token.
    anchors = {a for line in lines[start:end] for a in re.findall(_ANCHOR, line)}
    for i, line in enumerate(lines):
        if start <= i < end:
            continue
        for a in anchors:
            if re.search(r"\*" + re.escape(a) + r"(?![^\s,\[\]{}])", line):
                raise _fail(i + 1, f"uses the anchor &{a} of the module being replaced; "
                            "move the shared settings into another module")
