"""What a translation reads, and what it has to say when it cannot: the function's source
(checked to be the code that runs) and the :class:`Identity` that records every name,
attribute and default the translation read, so that a change anywhere in the rule's closure
is seen in a few microseconds (``Identity.fresh``)."""

from __future__ import annotations

import __future__
import ast
import inspect
import operator
import textwrap
import types
from itertools import repeat

MISSING = object()  # (a name not found)
_FUTURE_FLAGS = sum(getattr(__future__, name).compiler_flag
                    for name in __future__.all_feature_names)


class CannotGenerate(Exception):
    """A construct with no C++ counterpart; ``where`` is ``file:line`` of it (or '')."""

    def __init__(self, message, where=""):
        super().__init__(f"{where}: {message}" if where else message)
        self.reason, self.where = message, where


class SourceDoesNotParse(CannotGenerate):
    """The function's source file no longer parses (edited after it was imported)."""


class Identity:
    """What a translation read, as checks: each ``(mapping, key, object)`` looked up and each
    ``(object, attribute, value)`` read (a function's ``__code__``, ``__defaults__``, a closure
    cell's contents). :meth:`fresh` says whether every one still holds (identity tests: about
    0.1 us each)."""

    def __init__(self):
        self.lookups, self.attributes, self.sizes, self._seen = [], [], [], set()
        self.sequences = []  # (a list read as a constant, its elements then)
        self._cached = None  # (record counts, the records as columns): see _columns

    def lookup(self, mapping, key):
        value = mapping.get(key, MISSING)
        if (id(mapping), key) not in self._seen:
            self._seen.add((id(mapping), key))
            self.lookups.append((mapping, key, value))
        return value

    def attribute(self, owner, name):
        value = getattr(owner, name, MISSING)
        if (id(owner), name) not in self._seen:
            self._seen.add((id(owner), name))
            self.attributes.append((owner, name, value))
        return value

    def contents(self, mapping):
        """Every entry of ``mapping`` (a dict the translation read whole)."""
        for key in mapping:
            self.lookup(mapping, key)
        self.sizes.append((mapping, len(mapping)))

    def elements(self, sequence):
        """A list the translation read as a constant: its elements (changed in place, it is
        another constant)."""
        if id(sequence) not in self._seen:
            self._seen.add(id(sequence))
            self.sequences.append((sequence, tuple(sequence)))

    def fresh(self) -> bool:
        """Every recorded lookup and attribute still gives its object, every mapping read
        whole still has its size, every list read its elements: tested in C (``map``), no
        Python frame per check (but one per list)."""
        (mappings, keys, values), others, (owners, names, objects), (whole, sizes) = \
            self._columns()
        return (all(map(operator.is_, map(dict.get, mappings, keys, repeat(MISSING)), values))
                and all(m.get(k, MISSING) is v for m, k, v in others)
                and all(map(operator.is_, map(getattr, owners, names, repeat(MISSING)),
                            objects))
                and all(map(operator.eq, map(len, whole), sizes))
                and all(len(now) == len(then) and all(map(operator.is_, now, then))
                        for now, then in self.sequences))

    def _columns(self):
        """The records as columns, made again when a record was added: the lookups in dicts
        (a namespace), the other lookups (a class's mappingproxy) as they are, the
        attributes, the sizes."""
        counts = (len(self.lookups), len(self.attributes), len(self.sizes))
        if self._cached is None or self._cached[0] != counts:
            in_dicts = [record for record in self.lookups if type(record[0]) is dict]
            others = [record for record in self.lookups if type(record[0]) is not dict]
            self._cached = (counts, (_columns(in_dicts, 3), others,
                                     _columns(self.attributes, 3), _columns(self.sizes, 2)))
        return self._cached[1]

    def what_changed(self) -> str:
        """The first name or attribute that no longer holds what was translated ('' if none)."""
        for mapping, key, value in self.lookups:
            if mapping.get(key, MISSING) is not value:
                return f"{mapping.get('__name__', 'a namespace')}.{key}"
        for owner, name, value in self.attributes:
            if getattr(owner, name, MISSING) is not value:
                return f"{getattr(owner, '__qualname__', owner)!s}.{name}"
        for now, then in self.sequences:
            if len(now) != len(then) or any(map(operator.is_not, now, then)):
                return f"a list's elements ({now!r})"
        return ""


def _columns(records, width):
    """``records`` (tuples of ``width``) as ``width`` tuples, one per position."""
    return tuple(zip(*records)) if records else ((),) * width


def source_of(function):
    """``(definition, path, first line, lines)`` of ``function`` (a plain Python function
    whose source is the code that runs), or CannotGenerate."""
    name = getattr(function, "__qualname__", repr(function))
    if not isinstance(function, types.FunctionType):
        raise CannotGenerate(f"{name} is not a Python function")
    if function.__name__ == "<lambda>":
        raise CannotGenerate(f"{name} is a lambda (write it as a def)")
    code = function.__code__
    try:  # (of the code object: not what functools.wraps says it wraps)
        lines, first_line = inspect.getsourcelines(code)
        path = inspect.getsourcefile(code) or code.co_filename
    except (OSError, TypeError) as error:
        raise CannotGenerate(f"the source of {name} cannot be read ({error})") from error
    source = textwrap.dedent("".join(lines))
    try:
        definition = ast.parse(source).body[0]
    except SyntaxError as error:
        raise SourceDoesNotParse(
            f"the source of {name} does not parse ({error.msg}, line {error.lineno} of the "
            "function): its file was edited after it was imported",
            f"{path}:{first_line + (error.lineno or 1) - 1}") from error
    if not isinstance(definition, ast.FunctionDef) or definition.name != code.co_name:
        raise CannotGenerate(f"the source of {name} is not its def", f"{path}:{first_line}")
    _check_source_runs(function, source, name, f"{path}:{first_line}")
    return definition, path, max(first_line, 1), source.splitlines()


def _check_source_runs(function, source, name, where):
    """The source read is the code that runs: a file edited after it was imported is not."""
    code = function.__code__
    if code.co_freevars:  # (compiled alone, a closure's names would be globals)
        return
    namespace = {}
    try:
        flags = code.co_flags & _FUTURE_FLAGS  # (compiled as its module was)
        exec(compile(source, code.co_filename, "exec", flags=flags, dont_inherit=True),
             dict(function.__globals__), namespace)
    except Exception:  # noqa: BLE001 - a default that cannot be evaluated again, say
        return
    compiled = getattr(namespace.get(function.__name__), "__code__", None)
    # (not co_code: the interpreter's quickening shows in it; what the source holds does not
    # change: its numbers, names and locals)
    if compiled is None or (compiled.co_consts, set(compiled.co_names), compiled.co_varnames) \
            != (code.co_consts, set(code.co_names), code.co_varnames):
        raise CannotGenerate(f"the source of {name} in its file is not the code that runs "
                             "(the file was edited after it was imported: reload it)", where)
