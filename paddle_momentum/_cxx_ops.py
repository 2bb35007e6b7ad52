"""What each Python operation of a rule becomes in C++: the translator's table.

Each Paddle operation becomes one C++ operation with its semantics on Paddle's CPU kernels
(measured: ``docs/research/nan_bits.md``; the kernel's self-check compares every translation
with the composed ops on special values):

==========================================  ===============================================
Python (Paddle op)                          C++
==========================================  ===============================================
``a + b``, ``a * b`` (same-shape tensors)   ``AddKeepFirst(a, b)``, ``MulKeepFirst(a, b)``:
                                            where both are NaN, the first's NaN
``a - b``, ``a / b``; ``t + s``, ``t * s``  ``a - b``, ``a / b``; ``t + s``, ``t * s``
(``s`` a 0-d tensor)
``t * x``, ``x * t``, ``t + x``, ``x - t``  Paddle's ``scale`` op: ``t * T(x) + T(0)``,
(``x`` a Python number), ``-t``             ``t * T(1) + T(x)``, ``t * T(-1) + T(x)``, ...
``paddle.full([], x, t.dtype)``             ``MT(x)``: a 0-d tensor of ``t``'s type
``paddle.where(c, a, b)``                   ``c ? a : b``
``paddle.sign``, ``paddle.abs``             ``SignOf``, ``AbsOf``
``paddle.maximum``, ``paddle.minimum``      ``MaxOf``, ``MinOf`` (a NaN first operand wins)
``paddle.clip(t, x, y)``                    ``ClipTo(t, T(x), T(y))``
``paddle.scale(t, x)``                      as ``t * x`` (the same op)
``paddle.add_n([a, b])`` (gradient ops)     ``AddN(a, b, add_n_first)``: which NaN Paddle
                                            keeps depends on the element's position
``rnd(t)`` (``round_result``)               ``RoundTo<R, MT>(t)``
numbers (settings), ``float``, ``abs``,     doubles, as Python computes them; ``np.float32(x)``
``min``, ``max``, ``np.float32``            is ``double(float(x))``
==========================================  ===============================================

A construct not in this table is refused (``CannotGenerate``); ``paddle.sqrt`` on purpose:
Paddle's CPU wheel computes it approximately in AVX packets (``sqrt(1.0)`` is 0x3f7fffff,
``sqrt(inf)`` NaN) and exactly elsewhere, which the kernel does not model.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import operator

import numpy as np
import paddle

ELEMENT, SCALAR, HOST, BOOL, MASK = "element", "scalar", "host", "bool", "mask"
CONST, OBJECT, ROUND, TUPLE, DICT = "constant", "object", "round", "tuple", "dict"
TENSOR = (ELEMENT, SCALAR)
TENSOR_DTYPE = object()  # ``t.dtype`` of a tensor of the rule: the compute type

# Names the generated C++ uses itself (a Python name equal to one is renamed)
RESERVED = {
    "auto", "bool", "break", "case", "char", "class", "const", "default", "delete", "do",
    "double", "else", "enum", "float", "for", "goto", "int", "long", "new", "private",
    "public", "return", "short", "signed", "static", "struct", "switch", "template", "this",
    "typename", "union", "unsigned", "void", "volatile", "while", "h", "MT", "R", "T", "std",
    "s", "lr_in", "param_io", "grad_in", "velocity_io", "param_in", "has_l2", "RuleSettings",
    "RuleUpdate", "RoundTo", "AddKeepFirst", "MulKeepFirst", "kKeywordOptions", "add_n_first",
    "ScalarAs", "SignOf", "ClipTo", "AddN", "AbsOf", "MaxOf", "MinOf", "param", "grad",
    "velocity", "lr",
    # the rest of C++'s keywords and alternative tokens
    "alignas", "alignof", "and", "and_eq", "asm", "bitand", "bitor", "catch", "char16_t",
    "char32_t", "compl", "concept", "consteval", "constexpr", "constinit", "const_cast",
    "co_await", "co_return", "co_yield", "decltype", "dynamic_cast", "explicit", "export",
    "extern", "false", "friend", "inline", "mutable", "namespace", "noexcept", "not",
    "not_eq", "nullptr", "operator", "or", "or_eq", "protected", "register",
    "reinterpret_cast", "requires", "sizeof", "static_assert", "static_cast", "thread_local",
    "throw", "true", "try", "typedef", "typeid", "using", "virtual", "wchar_t", "xor",
    "xor_eq", "main", "NULL"}


@dataclasses.dataclass(frozen=True)
class Value:
    """A value of the function being translated: ``kind`` (a tensor's element or 0-d value,
    a host double, a bool or per-element mask, or a Python value known now: a constant, an
    object, a tuple, a dict, the rounding function), its C++ ``code``, and for the Python
    values the ``value`` itself. ``none_test``: C++ that is true where the Python value is
    None (``l2_coeff``). ``float32``: a host value that Python holds as a numpy float32."""

    kind: str
    code: str = ""
    value: object = None
    none_test: str = ""
    float32: bool = False


def is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating, np.bool_))


def is_tensor(value) -> bool:
    return isinstance(value, (paddle.Tensor, paddle.static.Variable)) or type(value).__name__ \
        == "Value" and hasattr(value, "dtype")


def literal(value) -> str:
    """A Python number as C++ (a double, exactly; a bool as bool)."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"the number {value} does not fit a double") from None
    if math.isnan(number):
        return "std::numeric_limits<double>::quiet_NaN()"
    if math.isinf(number):
        return ("" if number > 0 else "-") + "std::numeric_limits<double>::infinity()"
    return repr(number)


def as_runtime(translator, node, value: Value) -> Value:
    """A constant number as a host (or bool) value; anything else as it is."""
    if value.kind == CONST and isinstance(value.value, (bool, np.bool_)):
        return Value(BOOL, literal(value.value))
    if value.kind == CONST and is_number(value.value):
        return host(translator, node, value)
    return value


def host(translator, node, value: Value) -> Value:
    """``value`` as a host double (a constant number becomes its literal)."""
    if value.kind == CONST and is_number(value.value) and not isinstance(value.value, bool):
        try:
            code = literal(value.value)
        except ValueError as error:
            return translator.fail(node, str(error))
        return Value(HOST, code,
                     float32=isinstance(value.value, np.floating) and value.value.dtype != np.float64)
    if value.kind == HOST:
        return value
    return translator.fail(node, "an argument that must be a number")


def number(translator, code: str) -> str:
    """A host number as an operand of a Paddle op on tensors (``Scalar.to<T>()``)."""
    return f"static_cast<MT>(ScalarAs<T>({code}))" if translator.gradient \
        else f"static_cast<MT>({code})"


def merged(translator, node, a: Value, b: Value) -> str:
    if CONST in (a.kind, b.kind):
        return translator.fail(node, "a choice between a constant and a value the kernel holds")
    kinds = {a.kind, b.kind}
    if len(kinds) == 1 and a.kind in (ELEMENT, SCALAR, HOST, BOOL, MASK):
        return a.kind
    if kinds <= set(TENSOR):
        return ELEMENT
    if kinds <= {HOST, CONST} or kinds <= {BOOL, MASK}:
        return HOST if HOST in kinds else MASK
    return translator.fail(node, "a choice between a tensor and a Python value")


_FOLD = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
         ast.Div: operator.truediv, ast.Pow: operator.pow, ast.FloorDiv: operator.floordiv,
         ast.Mod: operator.mod}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}


def _folded(translator, node, function, *values):
    try:
        return translator.constant(function(*(v.value for v in values)))
    except Exception as error:  # noqa: BLE001 - Python's own error, now
        return translator.fail(node, f"a constant expression that fails ({error})")


def binary(translator, node, left: Value, right: Value) -> Value:
    op = type(node.op)
    if left.kind == CONST and right.kind == CONST and op in _FOLD:
        return _folded(translator, node, _FOLD[op], left, right)
    if left.kind == CONST:
        left = host(translator, node, left)
    if right.kind == CONST:
        right = host(translator, node, right)
    if left.kind == HOST and right.kind == HOST:  # Python arithmetic: doubles
        if left.float32 or right.float32:
            translator.fail(node, "arithmetic on a numpy float32 number (write float(...))")
        if op is ast.Pow:
            return Value(HOST, f"std::pow({left.code}, {right.code})")
        if op in _SYMBOLS:
            return Value(HOST, f"({left.code} {_SYMBOLS[op]} {right.code})")
    if op not in _SYMBOLS:
        return translator.fail(node, "an arithmetic operation the kernel cannot translate")
    symbol = _SYMBOLS[op]
    if left.kind in TENSOR and right.kind in TENSOR:
        kind = ELEMENT if ELEMENT in (left.kind, right.kind) else SCALAR
        if left.kind == right.kind and op is ast.Add:
            return Value(kind, f"AddKeepFirst({left.code}, {right.code})")
        if left.kind == right.kind and op is ast.Mult:
            return Value(kind, f"MulKeepFirst({left.code}, {right.code})")
        return Value(kind, f"({left.code} {symbol} {right.code})")
    if left.kind in TENSOR and right.kind == HOST:
        return scale_op(translator, left, symbol, right.code, reflected=False)
    if left.kind == HOST and right.kind in TENSOR:
        return scale_op(translator, right, symbol, left.code, reflected=True)
    return translator.fail(node, "an operation between a tensor and a value that is not a number")


def scale_op(translator, tensor: Value, symbol, value, reflected) -> Value:
    """A tensor and a Python number: Paddle's scale op, ``x * s + b`` in the tensor's type,
    as dygraph runs ``*``, ``+``, ``-`` (``/`` by a number: a divide)."""
    code, kind, s = tensor.code, tensor.kind, functools.partial(number, translator)
    translator.number_ops = True  # (a static program runs these otherwise: see _generate)
    if symbol == "*":  # (a gradient op: the product rounded to T first, as in Eigen)
        product = f"{code} * {s(value)}"
        product = f"RoundTo<T, MT>({product})" if translator.gradient else product
        return Value(kind, f"({product} + MT(0))")
    if symbol == "+":
        return Value(kind, f"({code} * MT(1) + {s(value)})")
    if symbol == "-" and not reflected:
        return Value(kind, f"({code} * MT(1) + {s(f'-({value})')})")
    if symbol == "-":
        return Value(kind, f"({code} * MT(-1) + {s(value)})")
    if not reflected:  # t / x: a full tensor, then divide
        return Value(kind, f"({code} / {s(value)})")
    return Value(kind, f"({s(value)} / {code})")


def unary(translator, node, operand: Value) -> Value:
    if isinstance(node.op, ast.UAdd) and operand.kind in (CONST, HOST, ELEMENT, SCALAR):
        return operand
    if operand.kind == CONST:
        fold = {ast.USub: operator.neg, ast.Not: operator.not_}.get(type(node.op))
        if fold is not None:
            return _folded(translator, node, fold, operand)
    if isinstance(node.op, ast.USub):
        if operand.kind in TENSOR:  # Paddle's neg of a tensor is scale(x, -1, bias 0)
            return Value(operand.kind, f"(({operand.code}) * MT(-1) + MT(0))")
        if operand.kind == HOST:
            return Value(HOST, f"(-({operand.code}))", float32=operand.float32)
    if isinstance(node.op, ast.Not) and operand.kind in (BOOL, HOST):
        return Value(BOOL, f"!({translator.condition(operand, node)})")
    return translator.fail(node, "a unary operation the kernel cannot translate")


def bool_op(translator, node, values) -> Value:
    """``and``/``or``, as Python decides them where the operands are known now."""
    is_or = isinstance(node.op, ast.Or)
    runtime = []
    for value in values:
        if value.kind in (CONST, OBJECT, ROUND):
            truthy = bool(value.value) if value.kind == CONST else True
            if truthy == is_or:  # it decides
                if runtime:
                    translator.fail(node, "an and/or mixing settings with other values")
                return value
            continue
        runtime.append(f"({translator.condition(value, node)})")
    if not runtime:
        return values[-1]
    return Value(BOOL, "(" + (" || " if is_or else " && ").join(runtime) + ")")


_COMPARE = {ast.Eq: ("==", operator.eq), ast.NotEq: ("!=", operator.ne),
            ast.Lt: ("<", operator.lt), ast.LtE: ("<=", operator.le),
            ast.Gt: (">", operator.gt), ast.GtE: (">=", operator.ge)}


def compare(translator, node, left: Value, right: Value) -> Value:
    op = node.ops[0]
    if isinstance(op, (ast.Is, ast.IsNot)):
        negate = isinstance(op, ast.IsNot)
        if left.kind in (CONST, OBJECT) and right.kind in (CONST, OBJECT):
            return translator.constant((left.value is right.value) != negate)
        if right.kind == CONST and right.value is None:
            if left.kind == ROUND:  # (None where nothing is rounded: R is the compute type)
                test = "std::is_same<R, MT>::value"
                return Value(BOOL, f"!({test})" if negate else test)
            if left.none_test:
                test = left.none_test
                return Value(BOOL, (test[1:] if test.startswith("!") else f"!({test})")
                             if negate else test)
            return translator.constant(negate)  # a tensor or setting is never None
        if left.kind == BOOL and right.kind == CONST and isinstance(right.value, bool):
            positive = right.value is not negate
            return Value(BOOL, left.code if positive else f"!{left.code}")
        return translator.fail(node, "an identity test other than `x is None` or `flag is True`")
    if type(op) not in _COMPARE:
        return translator.fail(node, "a comparison the kernel cannot translate")
    symbol, fold = _COMPARE[type(op)]
    if left.kind == CONST and right.kind == CONST:
        return _folded(translator, node, fold, left, right)
    left = host(translator, node, left) if left.kind == CONST else left
    right = host(translator, node, right) if right.kind == CONST else right
    if left.kind in TENSOR or right.kind in TENSOR:  # the number in the tensor's dtype
        codes = [number(translator, v.code) if v.kind in (HOST, BOOL) else v.code
                 for v in (left, right)]
        if not all(v.kind in (HOST, BOOL) + TENSOR for v in (left, right)):
            translator.fail(node, "a comparison of a tensor with something else")
        return Value(MASK, f"({codes[0]} {symbol} {codes[1]})")
    if left.kind in (HOST, BOOL) and right.kind in (HOST, BOOL):
        if left.float32 or right.float32:  # (numpy compares in float32 then)
            translator.fail(node, "a comparison with a numpy float32 number (write float(...))")
        return Value(BOOL, f"({left.code} {symbol} {right.code})")
    return translator.fail(node, "a comparison the kernel cannot translate")


# ---------------------------------------------------------------------- calls
def _tensor(translator, node, value):
    if value.kind not in TENSOR:
        translator.fail(node, "a Paddle op on a value that is not a tensor")
    return value


def _where(tr, node, condition, x, y, name=None):
    if condition.kind not in (BOOL, MASK):
        tr.fail(node, "paddle.where on a value that is not a condition")
    x, y = _tensor(tr, node, x), _tensor(tr, node, y)
    return Value(merged(tr, node, x, y), f"(({condition.code}) ? {x.code} : {y.code})")


def _unary_op(cxx):
    def translate(tr, node, x, name=None):
        x = _tensor(tr, node, x)
        return Value(x.kind, f"{cxx}({x.code})")
    return translate


def _binary_op(cxx):
    def translate(tr, node, x, y, name=None):
        x, y = _tensor(tr, node, x), _tensor(tr, node, y)
        return Value(merged(tr, node, x, y), f"{cxx}({x.code}, {y.code})")
    return translate


def _clip(tr, node, x, min=None, max=None, name=None):  # noqa: A002 - Paddle's names
    x = _tensor(tr, node, x)
    if min is None or max is None or CONST in (min.kind, max.kind) and None in (
            min.value, max.value):
        tr.fail(node, "paddle.clip without both bounds (its default bound depends on the dtype)")
    low, high = (host(tr, node, bound).code for bound in (min, max))
    return Value(x.kind, f"ClipTo({x.code}, {number(tr, low)}, {number(tr, high)})")


def _scale(tr, node, x, scale=None, bias=None, bias_after_scale=None, act=None, name=None):
    x = _tensor(tr, node, x)
    extra = (bias, bias_after_scale, act)
    if any(v is not None and not (v.kind == CONST and v.value in (0.0, True, None))
           for v in extra):
        tr.fail(node, "paddle.scale with a bias or an activation")
    factor = Value(CONST, value=1.0) if scale is None else scale
    return scale_op(tr, x, "*", host(tr, node, factor).code, reflected=False)


def _add_n(tr, node, inputs, name=None):
    if inputs.kind != TUPLE or len(inputs.value) != 2:
        tr.fail(node, "add_n of anything but a list of two tensors")
    if not tr.gradient:
        tr.fail(node, "add_n in the update (its NaN choice depends on the element's position; "
                      "write a + b)")
    a, b = (_tensor(tr, node, v) for v in inputs.value)
    return Value(merged(tr, node, a, b), f"AddN({a.code}, {b.code}, add_n_first)")


def _full(tr, node, shape, fill_value, dtype=None, name=None):
    if shape.kind != TUPLE or shape.value or dtype is None or dtype.value is not TENSOR_DTYPE:
        tr.fail(node, "paddle.full other than paddle.full([], number, tensor.dtype)")
    return Value(SCALAR, number(tr, host(tr, node, fill_value).code))


def _host_function(cxx, keep_float32=False):
    arity = cxx.__code__.co_argcount

    def translate(tr, node, *values):
        if len(values) != arity:
            tr.fail(node, f"a call with {len(values)} arguments (the kernel's takes {arity})")
        values = [host(tr, node, v) if v.kind == CONST else v for v in values]
        if any(v.kind != HOST for v in values):
            tr.fail(node, "a Python number function of a value that is not a number")
        return Value(HOST, cxx(*(v.code for v in values)), float32=keep_float32)
    return translate


@functools.lru_cache(maxsize=None)
def _paddle_ops():
    return {paddle.where: _where, paddle.sign: _unary_op("SignOf"),
            paddle.abs: _unary_op("AbsOf"), paddle.maximum: _binary_op("MaxOf"),
            paddle.minimum: _binary_op("MinOf"), paddle.clip: _clip, paddle.scale: _scale,
            paddle.add_n: _add_n, paddle.full: _full}


@functools.lru_cache(maxsize=None)
def _host_functions():
    return {
        float: _host_function(lambda x: x), np.float64: _host_function(lambda x: x),
        np.float32: _host_function(lambda x: f"static_cast<double>(static_cast<float>({x}))",
                                   keep_float32=True),
        abs: _host_function(lambda x: f"std::fabs({x})"),
        max: _host_function(lambda a, b: f"(({b}) > ({a}) ? ({b}) : ({a}))"),
        min: _host_function(lambda a, b: f"(({b}) < ({a}) ? ({b}) : ({a}))"),
        math.sqrt: _host_function(lambda x: f"std::sqrt({x})")}


@functools.lru_cache(maxsize=None)
def _refused():
    return {paddle.sqrt: "Paddle's CPU sqrt is approximate in AVX packets (sqrt(1.0) = "
                         "0x3f7fffff, sqrt(inf) = NaN) and exact in a tensor's tail, which the "
                         "kernel does not model"}


SUPPORTED_CALLS = ("paddle.where", "paddle.sign", "paddle.abs", "paddle.maximum",
                   "paddle.minimum", "paddle.clip", "paddle.scale", "paddle.add_n",
                   "paddle.full", "float", "abs", "min", "max", "np.float32", "np.float64",
                   "math.sqrt")


def call(translator, node, function, positional, keywords):
    """The value of a call of ``function`` (a Paddle op or a Python number function), or
    None where it is a Python function to translate inline."""
    handler = _paddle_ops().get(function) if _hashable(function) else None
    if handler is not None:
        try:
            bound = inspect.signature(function).bind(*positional, **keywords)
        except TypeError as error:
            return translator.fail(node, f"a call that does not fit {function.__name__} "
                                         f"({error})")
        return handler(translator, node, *bound.args, **bound.kwargs)
    name = ast.unparse(node.func)
    if _hashable(function) and function in _refused():
        return translator.fail(node, f"{name}(): {_refused()[function]}")
    host_function = _host_functions().get(function) if _hashable(function) else None
    if host_function is not None:
        if keywords:
            translator.fail(node, "keyword arguments to a Python number function")
        if all(v.kind == CONST for v in positional):
            return _folded(translator, node, function, *positional)
        return host_function(translator, node, *positional)
    library = (getattr(function, "__module__", None) or "").split(".")[0]
    if library in ("paddle", "numpy", "math", "builtins") or isinstance(
            function, (type, type(len), np.ufunc)):
        translator.fail(node, f"{name}() (a library function the kernel has no C++ for; it "
                              "has: " + ", ".join(SUPPORTED_CALLS) + ")")
    return None


def _hashable(function) -> bool:
    try:
        hash(function)
    except TypeError:
        return False
    return True
