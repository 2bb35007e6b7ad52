"""Python functions of Paddle tensors, translated into C++ one Paddle operation at a time.

:class:`Translator` reads a function's source and emits, statement by statement, C++ that
does each Paddle operation of it with that operation's semantics on Paddle's CPU kernels
(``_cxx_ops`` holds the table), in the function's order. It follows what the function
reaches:

* a call of a Python function whose source can be read (a helper, a wrapper forwarding
  ``*args``/``**kwargs``, functions calling functions) is translated inline;
* a name that is not a local is looked up as Python would (closure, module globals,
  builtins): a number there (module constant, numpy scalar) is read now, and an expression of
  such constants is computed now, by Python itself (so ``1 - NU`` is Python's double);
* an ``if`` on a constant translates only the branch Python would take.

Everything read this way is recorded in an :class:`~paddle_momentum._source.Identity`
(``_source``, which also reads a function's source): the functions' code and
defaults and every name looked up. While ``Identity.fresh()`` holds, the C++ is the
function's translation; a replaced function or a rebound constant anywhere in that closure
makes it stale. A construct with no C++ counterpart raises :class:`CannotGenerate`, which
names it and its file and line.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import inspect
import os
import types

import numpy as np

from . import _cxx_ops
from ._cxx_ops import (BOOL, CONST, DICT, ELEMENT, HOST, MASK, OBJECT, ROUND, SCALAR, TENSOR,
                       TUPLE, Value)
from ._source import MISSING as _MISSING
from ._source import CannotGenerate, Identity, source_of  # noqa: F401 (re-exported)

_CXX_TYPES = {ELEMENT: "MT", SCALAR: "MT", HOST: "double", BOOL: "bool", MASK: "bool"}
MAX_INLINE_DEPTH = 24


@dataclasses.dataclass
class Frame:
    """One function being translated: its Python names' values, where its source is."""

    function: types.FunctionType
    path: str
    line_offset: int
    lines: list
    names: dict
    prefix: str
    owned: set = dataclasses.field(default_factory=set)  # C++ variables of this frame
    branch: int = 0  # how many C++ branches deep the statement being translated is
    returned: Value | None = None  # a return at the top of the body (no variables)
    result: list | None = None  # [(C++ variable, kind)] where returns are inside branches
    flag: str | None = None  # the C++ bool set where a return inside a branch was taken

    def where(self, node) -> str:
        return f"{self.path}:{self.line_offset + getattr(node, 'lineno', 1)}"


class Translator:
    """Translates functions into one C++ body: :meth:`call` a function on values, then
    :meth:`declarations` and :attr:`out` are the body. ``gradient``: every tensor result is
    rounded to the gradient's type ``T`` (``RoundTo<T, MT>``), as Paddle's ops of that type
    round (the gradient ops); else only where the rule rounds (``rnd``)."""

    def __init__(self, identity: Identity, gradient=False, reserved=()):
        self.identity, self.gradient = identity, gradient
        self.used = set(_cxx_ops.RESERVED) | set(reserved)
        self.declared = {}  # C++ variable -> (C++ type, initial value)
        self.out = []
        self._inlined = 0
        self._frames = []
        self.number_ops = False  # a tensor and a Python number met (Paddle's scale op)

    # ------------------------------------------------------------------ names and output
    def fail(self, node, what):
        frame = self._frames[-1] if self._frames else None
        code = ast.unparse(node) if isinstance(node, ast.AST) else ""
        raise CannotGenerate(f"{what}" + (f": {code}" if code else ""),
                             frame.where(node) if frame else "")

    def variable(self, name, kind, frame, initial=None):
        """A new C++ variable for ``name`` (declared at the top of the body)."""
        base = f"{frame.prefix}{name}"
        if not base.isascii():  # (a Python name C++ cannot spell: μ, say)
            base = "v_" + base.encode("unicode_escape").decode().replace("\\", "_")
        cxx = base if base not in self.used else f"{base}_"
        while cxx in self.used:
            cxx += "_"
        self.used.add(cxx)
        self.declared[cxx] = (_CXX_TYPES[kind], "" if initial is None else initial)
        frame.owned.add(cxx)
        return cxx

    def declarations(self):
        return [f"  {cxx_type} {name}{{{initial}}};"
                for name, (cxx_type, initial) in self.declared.items()]

    def emit(self, frame, text, node=None):
        where = ""
        if node is not None and hasattr(node, "lineno"):
            python = frame.lines[node.lineno - 1].strip()
            where = (f"  // {os.path.basename(frame.path)}:"
                     f"{frame.line_offset + node.lineno}: {python}")
        self.out.append("  " * (frame.branch + len(self._frames)) + text + where)

    # ------------------------------------------------------------------ functions
    def call(self, function, positional, keywords, node=None, owned=()):
        """The value of ``function(*positional, **keywords)`` (values), translated inline;
        ``owned``: C++ variables the function may assign (the top function's tensors)."""
        if len(self._frames) >= MAX_INLINE_DEPTH:
            self.fail(node, "calls nested too deep (recursion?)")
        definition, path, first_line, lines = source_of(function)
        for attribute in ("__code__", "__defaults__", "__kwdefaults__", "__closure__"):
            self.identity.attribute(function, attribute)
        if function.__kwdefaults__:  # (a dict: changed in place, it counts too)
            self.identity.contents(function.__kwdefaults__)
        try:
            bound = inspect.signature(function, follow_wrapped=False).bind(*positional,
                                                                           **keywords)
        except TypeError as error:
            self.fail(node, f"the call does not fit {function.__qualname__}'s arguments "
                            f"({error})")
        bound.apply_defaults()
        names = {}
        for name, value in bound.arguments.items():
            kind = inspect.signature(function, follow_wrapped=False).parameters[name].kind
            if kind == inspect.Parameter.VAR_POSITIONAL:
                value = Value(TUPLE, value=tuple(self.constant(v) for v in value))
            elif kind == inspect.Parameter.VAR_KEYWORD:
                value = Value(DICT, value={k: self.constant(v) for k, v in value.items()})
            names[name] = self.constant(value)
        prefix = "" if not self._frames else f"{function.__name__}{self._inlined}_"
        self._inlined += 1
        frame = Frame(function, path, first_line - 1, lines, names, prefix, set(owned))
        self._frames.append(frame)
        try:
            # an argument the body assigns gets a variable of its own at entry, holding the
            # caller's value (so a branch that assigns it leaves the other path its value)
            for name in _assigned_names(definition) & set(names):
                value = names[name]
                if value.kind in _CXX_TYPES and value.code not in frame.owned:
                    cxx = self.variable(name, value.kind, frame)
                    self.emit(frame, f"{cxx} = {value.code};")
                    names[name] = Value(value.kind, cxx, none_test=value.none_test)
            self.block(definition.body, frame)
        finally:
            self._frames.pop()
        if frame.result is not None:
            values = [Value(kind, cxx) for cxx, kind in frame.result]
            return values[0] if len(values) == 1 else Value(TUPLE, value=tuple(values))
        return frame.returned if frame.returned is not None else Value(CONST, value=None)

    def constant(self, value):
        """A Python object as a value: values stay, numbers and None are constants."""
        if isinstance(value, Value):
            return value
        if _cxx_ops.is_number(value) or value is None or isinstance(value, str):
            return Value(CONST, value=value)
        if isinstance(value, (tuple, list)):
            if isinstance(value, list):  # (its elements can change in place: recorded)
                self.identity.elements(value)
            return Value(TUPLE, value=tuple(self.constant(v) for v in value))
        return Value(OBJECT, value=value)

    def resolve(self, name, frame, node):
        """A name that is not a local: the closure's, the module's, or a builtin."""
        function = frame.function
        code = function.__code__
        if name in code.co_freevars and function.__closure__:
            cell = function.__closure__[code.co_freevars.index(name)]
            return self.constant(self.identity.attribute(cell, "cell_contents"))
        value = self.identity.lookup(function.__globals__, name)
        if value is _MISSING:
            value = self.identity.lookup(vars(builtins), name)
        if value is _MISSING:
            self.fail(node, f"the name {name!r} (not an argument, local, global or builtin)")
        if _cxx_ops.is_tensor(value):
            self.fail(node, f"the tensor {name!r} from outside the function (pass it in)")
        return self.constant(value)

    # ------------------------------------------------------------------ statements
    def block(self, statements, frame):
        for index, statement in enumerate(statements):
            rest = statements[index + 1:]
            if isinstance(statement, ast.If) and index + 1 < len(statements):
                body_returns, else_returns = (_always_returns(statement.body),
                                              _always_returns(statement.orelse))
                if body_returns != else_returns:  # the rest of the block is the other branch
                    rest = statements[index + 1:]
                    rewritten = ast.If(test=statement.test,
                                       body=statement.body + ([] if body_returns else rest),
                                       orelse=statement.orelse + (rest if body_returns else []))
                    ast.copy_location(rewritten, statement)
                    return self.statement(rewritten, frame)
            self.statement(statement, frame)
            if _always_returns([statement]):
                return None
            if rest and _contains_return(statement):  # it returned on some path: the rest
                flag = self.returned_flag(frame)     # runs where it did not
                self.emit(frame, f"if (!{flag}) {{")
                frame.branch += 1
                self.block(rest, frame)
                frame.branch -= 1
                self.emit(frame, "}")
                return None
        return None

    def returned_flag(self, frame):
        """The C++ bool that says the frame has returned (set by a return in a branch)."""
        if frame.flag is None:
            frame.flag = self.variable("returned", BOOL, frame, "false")
        return frame.flag

    def statement(self, node, frame):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return None  # a docstring
        if isinstance(node, ast.Pass):
            return None
        if isinstance(node, ast.Assert):  # (the kernel cannot raise: only a constant one)
            test = self.expression(node.test, frame)
            if test.kind == CONST and test.value:
                return None
            return self.fail(node, "an assert the kernel cannot check (it cannot raise)")
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            return self.assign(node.targets[0], self.expression(node.value, frame), node, frame)
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            return self.assign(node.target, self.expression(node.value, frame), node, frame)
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            value = ast.BinOp(left=ast.Name(node.target.id, ast.Load()), op=node.op,
                              right=node.value)
            return self.assign(node.target, self.expression(ast.copy_location(value, node),
                                                            frame), node, frame)
        if isinstance(node, ast.If):
            return self.if_statement(node, frame)
        if isinstance(node, ast.Return):
            return self.return_statement(node, frame)
        return self.fail(node, "a statement the kernel generator cannot translate")

    def assign(self, target, value, node, frame):
        if isinstance(target, (ast.Tuple, ast.List)):
            if value.kind != TUPLE or len(value.value) != len(target.elts):
                self.fail(node, "unpacking a value that is not a tuple of as many values")
            for element_target, element in zip(target.elts, value.value):
                self.assign(element_target, element, node, frame)
            return
        if not isinstance(target, ast.Name):
            self.fail(node, "an assignment to something other than a name")
        name, current = target.id, frame.names.get(target.id)
        if value.kind not in _CXX_TYPES:  # a constant, function, tuple...: no C++ needed
            if frame.branch == 0 and (current is None or current.code not in frame.owned):
                frame.names[name] = value
                return
            if value.kind == CONST and _cxx_ops.is_number(value.value):
                value = _cxx_ops.host(self, node, value) if not isinstance(
                    value.value, (bool, np.bool_)) else Value(BOOL, _cxx_ops.literal(value.value))
                if value.float32:
                    self.fail(node, "a numpy float32 number assigned in a branch (its "
                                    "arithmetic is float32's: write float(...))")
            else:
                self.fail(node, "a value the kernel cannot hold, assigned in a branch")
        if current is not None and current.code in frame.owned:
            if (current.kind in TENSOR) != (value.kind in TENSOR) or (
                    current.kind not in TENSOR and current.kind != value.kind
                    and {current.kind, value.kind} != {BOOL, MASK}):
                self.fail(node, f"{name} holds a tensor in one place, a Python value in another")
            kind = ELEMENT if ELEMENT in (current.kind, value.kind) else value.kind
            cxx = current.code
            if cxx in self.declared:
                self.declared[cxx] = (_CXX_TYPES[kind], self.declared[cxx][1])
        else:
            initial = None
            if current is not None and current.kind == CONST and _cxx_ops.is_number(
                    current.value):  # (a branch assigns it; the other path keeps the constant)
                initial = _cxx_ops.literal(current.value)
            kind = value.kind
            cxx = self.variable(name, kind, frame, initial)
        frame.names[name] = Value(kind, cxx)
        self.emit(frame, f"{cxx} = {value.code};", node)

    def if_statement(self, node, frame):
        test = self.expression(node.test, frame)
        if test.kind == CONST or (test.kind == OBJECT and test.value is not None):
            taken = node.body if (test.value if test.kind == CONST else True) else node.orelse
            return self.block(taken, frame)
        condition = self.condition(test, node)
        self.emit(frame, f"if ({condition}) {{", node)
        frame.branch += 1
        self.block(node.body, frame)
        frame.branch -= 1
        if node.orelse:
            self.emit(frame, "} else {")
            frame.branch += 1
            self.block(node.orelse, frame)
            frame.branch -= 1
        self.emit(frame, "}")
        return None

    def return_statement(self, node, frame):
        value = (self.expression(node.value, frame) if node.value is not None
                 else Value(CONST, value=None))
        if frame.branch == 0 and frame.result is None:
            frame.returned = value
            return
        values = list(value.value) if value.kind == TUPLE else [value]
        if frame.result is None:
            frame.result = []
            for index, element in enumerate(values):
                if element.kind == CONST and _cxx_ops.is_number(element.value):
                    element = Value(HOST, _cxx_ops.literal(element.value))
                if element.kind not in _CXX_TYPES:
                    self.fail(node, "a return inside a branch of a value the kernel cannot hold")
                frame.result.append((self.variable(f"result{index}", element.kind, frame),
                                     element.kind))
        if len(values) != len(frame.result):
            self.fail(node, "returns of different lengths")
        if frame.flag is not None or frame.branch > 0:
            self.emit(frame, f"{self.returned_flag(frame)} = true;")
        for index, (element, (cxx, kind)) in enumerate(zip(values, frame.result)):
            if element.kind == CONST and _cxx_ops.is_number(element.value):
                element = Value(HOST, _cxx_ops.literal(element.value))
            if (element.kind in TENSOR) != (kind in TENSOR):
                self.fail(node, "returns a tensor in one branch, a Python value in another")
            if ELEMENT in (element.kind, kind):
                frame.result[index] = (cxx, ELEMENT)
            self.emit(frame, f"{cxx} = {element.code};", node)

    # ------------------------------------------------------------------ expressions
    def condition(self, value, node) -> str:
        if value.kind == BOOL:
            return value.code
        if value.kind == HOST:
            return f"({value.code}) != 0.0"
        if value.kind == CONST:
            return "true" if value.value else "false"
        return self.fail(node, "a condition on a tensor (branch on settings; use paddle.where)")

    def expression(self, node, frame) -> Value:
        value = self._expression(node, frame)
        if (self.gradient and value.kind in TENSOR
                and not isinstance(node, (ast.Name, ast.Constant))):
            return Value(value.kind, f"RoundTo<T, MT>({value.code})")
        return value

    def _expression(self, node, frame) -> Value:
        if isinstance(node, ast.Name):
            if node.id in frame.names:
                return frame.names[node.id]
            return self.resolve(node.id, frame, node)
        if isinstance(node, ast.Constant):
            return self.constant(node.value)
        if isinstance(node, ast.Attribute):
            return self.attribute(self.expression(node.value, frame), node)
        if isinstance(node, (ast.Tuple, ast.List)):
            return Value(TUPLE, value=tuple(self.expression(e, frame) for e in node.elts))
        if isinstance(node, ast.BinOp):
            return _cxx_ops.binary(self, node, self.expression(node.left, frame),
                                   self.expression(node.right, frame))
        if isinstance(node, ast.UnaryOp):
            return _cxx_ops.unary(self, node, self.expression(node.operand, frame))
        if isinstance(node, ast.BoolOp):
            return _cxx_ops.bool_op(self, node, [self.expression(v, frame) for v in node.values])
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1:
                self.fail(node, "a chained comparison")
            return _cxx_ops.compare(self, node, self.expression(node.left, frame),
                                    self.expression(node.comparators[0], frame))
        if isinstance(node, ast.IfExp):
            test = self.expression(node.test, frame)
            if test.kind == CONST:
                return self.expression(node.body if test.value else node.orelse, frame)
            yes, no = (_cxx_ops.as_runtime(self, node, self.expression(side, frame))
                       for side in (node.body, node.orelse))
            return Value(_cxx_ops.merged(self, node, yes, no),
                         f"(({self.condition(test, node)}) ? {yes.code} : {no.code})")
        if isinstance(node, ast.Call):
            return self.call_expression(node, frame)
        return self.fail(node, "an expression the kernel generator cannot translate")

    def attribute(self, owner: Value, node):
        if owner.kind == OBJECT:
            if isinstance(owner.value, types.ModuleType):
                value = self.identity.lookup(vars(owner.value), node.attr)
            else:
                value = self.identity.attribute(owner.value, node.attr)
            if value is _MISSING:
                self.fail(node, f"{node.attr!r} is not an attribute")
            return self.constant(value)
        if owner.kind in TENSOR and node.attr == "dtype":
            return Value(OBJECT, value=_cxx_ops.TENSOR_DTYPE)
        return self.fail(node, "an attribute the kernel generator cannot translate")

    def call_expression(self, node, frame):
        callee = self.expression(node.func, frame)
        positional, keywords = [], {}
        for argument in node.args:
            if isinstance(argument, ast.Starred):
                expanded = self.expression(argument.value, frame)
                if expanded.kind != TUPLE:
                    self.fail(node, "*arguments that are not a tuple")
                positional.extend(expanded.value)
            else:
                positional.append(self.expression(argument, frame))
        for keyword in node.keywords:
            value = self.expression(keyword.value, frame)
            if keyword.arg is None:
                if value.kind != DICT:
                    self.fail(node, "**arguments that are not a dict")
                keywords.update(value.value)
            else:
                keywords[keyword.arg] = value
        if callee.kind == ROUND:
            if len(positional) != 1 or positional[0].kind not in TENSOR:
                self.fail(node, "rounding anything but one tensor")
            return Value(positional[0].kind, f"RoundTo<R, MT>({positional[0].code})")
        if callee.kind != OBJECT:
            self.fail(node, "a call of a value that is not a function")
        function = callee.value
        handled = _cxx_ops.call(self, node, function, positional, keywords)
        if handled is not None:
            return handled
        if isinstance(function, types.FunctionType):
            return self.call(function, positional, keywords, node)
        return self.fail(node, f"the call {ast.unparse(node.func)}() (no C++ counterpart: "
                               "neither a Python function with source nor a Paddle op the "
                               "kernel has)")


def _assigned_names(definition) -> set:
    """The names the function's body assigns."""
    return {node.id for node in ast.walk(definition)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}


def _contains_return(statement) -> bool:
    return any(isinstance(node, ast.Return) for node in ast.walk(statement))


def _always_returns(statements) -> bool:
    if not statements:
        return False
    last = statements[-1]
    if isinstance(last, ast.Return):
        return True
    return (isinstance(last, ast.If) and _always_returns(last.body)
            and _always_returns(last.orelse))
