"""Read the config file's YAML noting the line of every key, and word what is wrong in it: each
problem with its key path, its line and, for a misspelt key or type, the closest valid one.

The models in `sync.config` say what is valid; this module only says where and what was meant.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from sync.errors import ConfigError, ConfigProblem

__all__ = [
    "KeyLines",
    "expand_variables",
    "hidden_characters",
    "parse_yaml",
    "unknown_type",
    "validation_problems",
    "visible",
]

# The line of each key in the file, by its path: ("events", 0, "name") -> 12.
KeyLines = dict[tuple[str | int, ...], int]
# What people write for a type, from databases and programming languages: the type it means.
TYPE_SYNONYMS: dict[str, str] = {
    "str": "string",
    "text": "string",
    "varchar": "string",
    "char": "string",
    "int": "number",
    "integer": "number",
    "bigint": "number",
    "float": "number",
    "double": "number",
    "decimal": "number",
    "numeric": "number",
    "real": "number",
    "bool": "boolean",
    "datetime": "date",
    "timestamp": "date",
    "timestamptz": "date",
}


def parse_yaml(file: str, text: str) -> tuple[Any, KeyLines]:
    """Parse the YAML and note the line of every key, so problems can point into the file."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(file, [ConfigProblem("", f"not valid YAML: {problem}", line)]) from None
    if not isinstance(raw, dict) or node is None:
        raise ConfigError(file, [ConfigProblem("", "the file must be a YAML mapping of keys")])
    lines: KeyLines = {}
    duplicates: list[ConfigProblem] = []
    _note_lines(node, (), lines, duplicates)
    if duplicates:  # YAML keeps the last silently; a mapping written twice is a mistake
        raise ConfigError(file, duplicates)
    return raw, lines


def _note_lines(
    node: yaml.Node,
    path: tuple[str | int, ...],
    lines: KeyLines,
    duplicates: list[ConfigProblem],
) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            line = key.start_mark.line + 1
            if child in lines:
                message = f"'{key.value}' is given twice (first at line {lines[child]})"
                duplicates.append(ConfigProblem(_dotted(child), message, line))
            lines[child] = line
            _note_lines(value, child, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _note_lines(item, (*path, index), lines, duplicates)


# The values that may name environment variables, `${NAME}`: where files and the database are,
# so that a password (or a machine's own folders) need not be written in the config.
WITH_VARIABLES: tuple[tuple[str, ...], ...] = (
    ("source", "csv"),
    ("source", "parquet"),
    ("source", "excel"),
    ("source", "excel", "path"),
    ("source", "sql", "url"),
    ("state",),
)
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_variables(raw: Any, lines: KeyLines, env: Mapping[str, str]) -> list[ConfigProblem]:
    """Put each `${NAME}` of the values `WITH_VARIABLES` names from `env`, in `raw` itself;
    return a problem, at its key and line, for each value that names an unset variable."""
    problems = []
    for path in WITH_VARIABLES:
        parent = raw
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        value = parent.get(path[-1]) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or not isinstance(value, str):
            continue
        unset = list(dict.fromkeys(name for name in _VARIABLE.findall(value) if name not in env))
        if unset:
            problems.append(ConfigProblem(_dotted(path), _unset(unset), _line_of(path, lines)))
        else:
            parent[path[-1]] = _VARIABLE.sub(lambda found: env[found[1]], value)
    return problems


def _unset(names: list[str]) -> str:
    written = ", ".join(f"${{{name}}}" for name in names)
    if len(names) == 1:
        return f"the environment variable {names[0]} is not set ({written})"
    listed = ", ".join(names[:-1]) + " and " + names[-1]
    return f"the environment variables {listed} are not set ({written})"


def validation_problems(
    error: ValidationError,
    lines: KeyLines,
    known_keys: Callable[[tuple[str | int, ...]], list[str]],
) -> list[ConfigProblem]:
    """Each of pydantic's errors as a problem at its key path and line; an unknown key names the
    closest of the `known_keys` at its place."""
    problems = []
    for item in error.errors():
        loc = tuple(part for part in item["loc"] if part not in ("function-before", "[key]"))
        path = _dotted(loc)
        if item["type"] == "extra_forbidden":
            message = f"unknown key '{loc[-1]}'" + _did_you_mean(str(loc[-1]), known_keys(loc[:-1]))
        else:
            message = item["msg"].removeprefix("Value error, ")
        problems.append(ConfigProblem(path, message, _line_of(loc, lines)))
    return problems


def _line_of(loc: tuple[str | int, ...], lines: KeyLines) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f" (valid keys: {', '.join(candidates)})" if candidates else ""


def unknown_type(value: object, types: Sequence[str]) -> str:
    """The problem with a type that is none of `types`: it names the value and, if one is close,
    the type meant (`int` means 'number')."""
    listed = ", ".join(f"'{name}'" for name in types[:-1]) + f" or '{types[-1]}'"
    which = f"(a type is {listed})"
    written = str(value).strip().lower()
    close = difflib.get_close_matches(written, [*types, *TYPE_SYNONYMS], n=1, cutoff=0.6)
    if not close:
        return f"unknown type '{value}' {which}"
    meant = TYPE_SYNONYMS.get(close[0], close[0])
    return f"unknown type '{value}'; did you mean '{meant}'? {which}"


def visible(text: str) -> str:
    """`text` with each character a reader cannot see as its escape (`First\\u00a0Name`): a
    header with a non-breaking or zero-width space looks like the name the config gives."""
    return "".join(char if char == " " or char.isprintable() else _escape(char) for char in text)


def hidden_characters(text: str) -> str:
    """What `visible` escaped in `text`, named: '\\u00a0 is a NO-BREAK SPACE'; '' if nothing."""
    hidden = dict.fromkeys(char for char in text if char != " " and not char.isprintable())
    return ", ".join(
        f"{_escape(char)} is a {unicodedata.name(char, 'control character')}" for char in hidden
    )


def _escape(char: str) -> str:
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
