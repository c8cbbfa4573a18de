"""Command-line parameters the way PVE::JSONSchema::get_options + validate handle them.

Getopt::Long with prefix_pattern (--|-), permute, ignore_case and auto-abbreviation;
booleans are optional-value options; '*-list' formats may repeat and are joined with ','.
Every value ends up a string (RESTHandler untaints parameters with a regex capture).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from . import names

_OPTION_RE = re.compile(r"(--|-)(.+)", re.S)


@dataclass(frozen=True)
class Param:
    """One API parameter (a positional argument or an option)."""

    name: str
    type: str = "string"  # string | boolean | integer
    is_list: bool = False  # a '*-list' format: '=s@' in Getopt, joined with ','
    optional: bool = True
    fmt: Optional[Callable[[str], object]] = None  # raises names.Invalid
    pattern: Optional["re.Pattern[str]"] = None
    minimum: Optional[int] = None
    min_length: Optional[int] = None
    max_length: Optional[int] = None
    enum: Optional[Tuple[str, ...]] = None
    requires: Optional[str] = None


class OptionError(Exception):
    """Getopt failed: its warnings go to stderr, then '400 unable to parse option'."""

    def __init__(self, warnings: List[str]) -> None:
        super().__init__("unable to parse option")
        self.warnings = warnings


class UsageError(Exception):
    """A '400 <msg>' raised while parsing (not enough arguments, bad boolean ...)."""


class ParamError(Exception):
    """raise_param_exc: '400 Parameter verification failed.' plus one line per parameter."""

    def __init__(self, errors: Dict[str, str], msg: str = "Parameter verification failed.") -> None:
        super().__init__(msg)
        self.msg = msg
        self.errors = errors


def parse_boolean(text: str) -> Optional[int]:
    if re.fullmatch(r"1|true|yes|on", text, re.I):
        return 1
    if re.fullmatch(r"0|false|no|off", text, re.I):
        return 0
    return None


def _resolve(name: str, params: Dict[str, Param]) -> Tuple[Optional[Param], Optional[str]]:
    """Exact (case-insensitive) name, else a unique prefix: Getopt's auto_abbrev."""
    key = name.lower()
    if key in params:
        return params[key], None
    hits = sorted(p for p in params if p.startswith(key))
    if len(hits) == 1:
        return params[hits[0]], None
    if hits:
        return None, f"Option {name} is ambiguous ({', '.join(hits)})\n"
    return None, f"Unknown option: {name}\n"


def getopt(args: Sequence[str], params: Dict[str, Param]) -> Tuple[Dict[str, object], List[str]]:
    """-> (options, remaining positional arguments); raises OptionError."""
    opts: Dict[str, object] = {}
    rest: List[str] = []
    warnings: List[str] = []
    queue = list(args)
    while queue:
        arg = queue.pop(0)
        if arg == "--":
            rest.extend(queue)
            break
        m = _OPTION_RE.fullmatch(arg)
        if not m:
            rest.append(arg)
            continue
        name, has_value, value = m.group(2).partition("=")
        param, problem = _resolve(name, params)
        if param is None:
            warnings.append(problem or "")
            continue
        if not has_value:
            value = _take_value(param, queue)
        if value is None or (has_value and value == "" and param.type != "boolean"):
            warnings.append(f"Option {name} requires an argument\n")
            continue
        if param.is_list:
            opts.setdefault(param.name, [])
            opts[param.name].append(value)  # type: ignore[union-attr]
        else:
            opts[param.name] = value
    if warnings:
        raise OptionError(warnings)
    return opts, rest


def _take_value(param: Param, queue: List[str]) -> Optional[str]:
    if param.type == "boolean":  # ':s' - take the next arg unless it looks like an option
        if queue and queue[0] != "--" and not re.fullmatch(r"(--|-).+", queue[0], re.S):
            return queue.pop(0)
        return ""
    return queue.pop(0) if queue else None  # '=s' takes anything


def parse_args(
    args: Sequence[str], params: Sequence[Param], positional: Sequence[str], optional_positional: bool = False
) -> Dict[str, str]:
    """get_options: options, then positional arguments, then booleans and lists."""
    by_name = {p.name: p for p in params}
    opts, rest = getopt(args, by_name)
    if rest:
        for name in positional:
            if not rest:
                raise UsageError("not enough arguments")
            opts[name] = rest.pop(0)
        if rest:
            raise UsageError("too many arguments")
    elif positional and not optional_positional:
        raise UsageError("not enough arguments")
    values: Dict[str, str] = {}
    for name, value in opts.items():
        param = by_name[name]
        if isinstance(value, list):
            value = ",".join(value)
        if param.type == "boolean":
            value = _boolean(str(value))
        values[name] = str(value)
    return values


def _boolean(value: str) -> str:
    if value == "":
        return "1"
    parsed = parse_boolean(value)
    if parsed is None:
        raise UsageError("unable to parse boolean option")
    return str(parsed)


def validate(values: Dict[str, str], params: Sequence[Param]) -> None:
    """PVE::JSONSchema::validate of the method's parameter schema; raises ParamError."""
    errors: Dict[str, str] = {}
    for param in params:
        value = values.get(param.name)
        if value is None:
            if not param.optional:
                errors[param.name] = "property is missing and it is not optional"
            continue
        problem = _check(param, value)
        if problem:
            errors[param.name] = problem
    for param in params:
        if param.requires and param.name in values and param.requires not in values:
            errors[param.requires] = f"missing property - '{param.name}' requires this property"
    if errors:
        raise ParamError(errors)


def _check(param: Param, value: str) -> Optional[str]:
    if param.type == "integer":
        if not re.fullmatch(r"-?\d+", value):
            return f"type check ('integer') failed - got '{value}'"
        if param.minimum is not None and int(value) < param.minimum:
            return f"value must have a minimum value of {param.minimum}"
        return None
    if param.max_length is not None and len(value) > param.max_length:
        return f"value may only be {param.max_length} characters long"
    if param.min_length is not None and len(value) < param.min_length:
        return f"value must be at least {param.min_length} characters long"
    if param.pattern is not None and not param.pattern.fullmatch(value):
        return "value does not match the regex pattern"
    if param.fmt is not None:
        try:
            for item in (names.split_list(value) if param.is_list else [value]):
                param.fmt(item)
        except names.Invalid as err:
            return f"invalid format - {err}"
    if param.enum is not None and value not in param.enum:
        return f"value '{value}' does not have a value in the enumeration '{', '.join(param.enum)}'"
    return None
