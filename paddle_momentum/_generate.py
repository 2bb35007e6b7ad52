"""The fused kernel's update arithmetic, generated from ``rule.py``.

``rule.py`` is the only copy of the arithmetic. This module reads ``momentum_update``'s source
and translates it, statement by statement, into a C++ function (``RuleUpdate``) that the
kernel's hand-written loops (``csrc/momentum_kernel.cc``: threads, the gradient table, the norm
clips' reductions, loads and stores) call once per element; and likewise the gradient ops
``clip_by_value`` and ``l1_decay`` (``GRADIENT_OPS``), each op of which rounds to the
gradient's type. Each Paddle operation the rule makes
becomes one C++ operation with that operation's semantics on Paddle's CPU kernels, in the
rule's order (the file is compiled without contraction), so the kernel runs the rule bit for
bit, signed zeros and NaN signs included:

==========================================  ===============================================
rule.py (Paddle op)                         C++
==========================================  ===============================================
``a + b``, ``a * b`` (same-shape tensors)   ``AddKeepFirst(a, b)``, ``MulKeepFirst(a, b)``:
                                            Paddle's CPU add and multiply keep the first
                                            operand's NaN where both are NaN
``a - b``, ``a / b``                        ``a - b``, ``a / b``
``t + s``, ``t * s`` (``s`` a 0-d tensor)   ``t + s``, ``t * s``
``t * x``, ``x * t``, ``t + x``, ``x - t``  Paddle's ``scale`` op: ``t * T(x) + T(0)``,
(``x`` a Python number), ``-t``             ``t * T(1) + T(x)``, ``t * T(-1) + T(x)``, ...
``attribute(x, like)``                      ``MT(float(x))``: a kernel attribute
``rnd(t)`` (``round_result``)               ``RoundTo<R, MT>(t)``
``paddle.where(c, a, b)``                   ``c ? a : b``
``paddle.sign(t)``, ``paddle.clip(t, x, y)``  ``SignOf(t)``, ``ClipTo(t, T(x), T(y))``
``paddle.scale(t, x)``                      as ``t * x`` (the same op)
``paddle.add_n([a, b])`` (gradient ops)     ``AddN(a, b, add_n_first)``: which NaN Paddle
                                            keeps depends on the element's position
``if``/``elif``/``else`` on settings        ``if`` on loop-invariant values
==========================================  ===============================================

Settings are read from the kernel's attributes, declared once in ``_settings.RULE_SETTINGS``
(whose attribute list, ``PM_RULE_ATTRIBUTES``, is generated here too); ``l2_coeff`` (None:
``has_l2`` false) and ``first_step`` are attributes of their own. A construct the translator
has no C++ for (another Paddle call, a loop, ...) raises :class:`CannotGenerate`, naming it
and its line: the kernel is then not used for the rule (``_kernel``), never a stale one.

Paddle's semantics of a tensor-and-Python-number operation are dygraph's; a static program
runs some of them otherwise (float64: the number rounded to float32; ``t / x`` as ``t * (1 /
x) + 0``), which is why ``rule.py`` itself writes its scalars as 0-d tensors
(``attribute``). Where a NaN learning rate or attribute meets a NaN element, which NaN
survives is not modelled (Paddle's broadcast add and multiply keep the 0-d operand's).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import textwrap

from . import rule
from ._settings import RULE_SETTINGS

ELEMENT, SCALAR, HOST, BOOL, MASK = "element", "scalar", "host", "bool", "mask"
_TENSOR = (ELEMENT, SCALAR)
# the rule's arguments: its tensors, then the kernel's own attributes
_TENSOR_ARGUMENTS = {"param": ELEMENT, "grad": ELEMENT, "velocity": ELEMENT, "lr": SCALAR}
_CXX_RESERVED = {"auto", "bool", "break", "case", "char", "class", "const", "default", "delete",
                 "do", "double", "else", "enum", "float", "for", "goto", "int", "long", "new",
                 "private", "public", "return", "short", "signed", "static", "struct",
                 "switch", "template", "this", "typename", "union", "unsigned", "void",
                 "volatile", "while", "h", "MT", "R",
                 # the generated function's own names
                 "s", "lr_in", "param_io", "grad_in", "velocity_io", "has_l2", "RuleSettings",
                 "RuleUpdate", "RoundTo", "AddKeepFirst", "MulKeepFirst", "kKeywordOptions",
                 "T", "add_n_first", "ScalarAs", "SignOf", "ClipTo", "AddN"}
_CXX_RESERVED |= set(f"{name}_in" for name in ("param", "grad"))


class CannotGenerate(Exception):
    """The rule holds a construct with no C++ counterpart (the message names it)."""


@dataclasses.dataclass(frozen=True)
class Generated:
    """The generated C++: ``attributes`` (the ``PM_RULE_ATTRIBUTES`` X-macro), ``function``
    (``RuleUpdate``), and ``digest`` (a hash of both, for messages)."""

    attributes: str
    function: str

    @property
    def digest(self) -> str:
        return hashlib.sha256((self.attributes + self.function).encode()).hexdigest()[:12]


def attribute_macro() -> str:
    """``#define PM_RULE_ATTRIBUTES(X) ...``: the rule settings as kernel attributes."""
    types = {"double": "int64_t", "bool": "bool", "float32": "float"}
    entries = " ".join(f"X({types[s.kernel]}, {s.name})" for s in RULE_SETTINGS)
    return f"#define PM_RULE_ATTRIBUTES(X) {entries}\n"


# The gradient ops generated beside the update: rule.py's function -> the C++ function.
GRADIENT_OPS = {"clip_by_value": "RuleClipByValue", "l1_decay": "RuleL1Decay"}


def rule_functions() -> tuple:
    """The functions of ``rule.py`` the kernel is generated from, looked up now (so an edited
    module reloaded, or a function replaced, is seen): the update, then the gradient ops."""
    return (rule.momentum_update,) + tuple(getattr(rule, name) for name in GRADIENT_OPS)


def generate(functions=None) -> Generated:
    """The C++ of ``functions`` (default: :func:`rule_functions`): ``RuleUpdate`` from the
    update, and one function per gradient op (``GRADIENT_OPS``)."""
    update, *gradient_ops = functions or rule_functions()
    parts = [_translate(update).function(_definition(update))]
    for function, cxx_name in zip(gradient_ops, GRADIENT_OPS.values()):
        parts.append(_translate(function, gradient=True).gradient_function(
            _definition(function), cxx_name))
    return Generated(attribute_macro(), "\n".join(parts))


def _source(function):
    try:
        source = textwrap.dedent(inspect.getsource(function))
        path = inspect.getsourcefile(function)
        first_line = inspect.getsourcelines(function)[1]
    except (OSError, TypeError) as error:
        raise CannotGenerate(f"the source of rule.{getattr(function, '__name__', function)} "
                             f"cannot be read ({error})") from error
    return source, path, first_line


def _translate(function, gradient=False):
    source, path, first_line = _source(function)
    return _Translator(path, first_line - 1, source.splitlines(), gradient)


def _definition(function):
    definition = ast.parse(_source(function)[0]).body[0]
    if not isinstance(definition, ast.FunctionDef):
        raise CannotGenerate(f"rule.{function.__name__} is not a plain function")
    return definition


def _setting_kinds():
    return {s.name: (BOOL if s.kernel == "bool" else HOST) for s in RULE_SETTINGS}


class _Translator:
    """``gradient``: translating a gradient op (``GRADIENT_OPS``), where every Paddle op
    rounds to the gradient's type ``T`` (``RoundTo<T, MT>``) and Python numbers enter as
    Paddle's ops of type ``T`` take them (``ScalarAs<T>``); else the update, whose rounding is
    the rule's own ``rnd``."""

    def __init__(self, path, line_offset, lines, gradient=False):
        self.path, self.line_offset, self.lines = path, line_offset, lines
        self.gradient = gradient
        self.kinds = {}  # variable -> kind
        self.declared = {}  # assigned variable -> kind (declared at the top)
        self.rounding = set()  # names bound to the rounding function
        self.out = []

    # ------------------------------------------------------------------ errors and names
    def fail(self, node, what):
        line = self.line_offset + getattr(node, "lineno", 1)
        code = ast.unparse(node) if isinstance(node, ast.AST) else str(node)
        raise CannotGenerate(f"{self.path}:{line}: {what}: {code}")

    @staticmethod
    def cxx_name(name):
        return f"{name}_" if name in _CXX_RESERVED else name

    # ------------------------------------------------------------------ the function
    def function(self, definition: ast.FunctionDef):
        arguments = definition.args
        names = [a.arg for a in arguments.args + arguments.kwonlyargs]
        settings = _setting_kinds()
        for name in names:
            if name in _TENSOR_ARGUMENTS:
                self.kinds[name] = _TENSOR_ARGUMENTS[name]
            elif name in settings:
                self.kinds[name] = settings[name]
            elif name == "l2_coeff":
                self.kinds[name] = HOST
            elif name == "first_step":
                self.kinds[name] = BOOL
            elif name == "round_result":
                self.kinds[name] = "round_result"
            else:
                self.fail(definition, f"argument {name!r} is neither a tensor of the update, "
                                      "nor a setting declared in _settings.RULE_SETTINGS")
        missing = [s.name for s in RULE_SETTINGS if s.name not in names]
        if missing:
            self.fail(definition, f"settings {missing} are declared but not arguments")
        self.block(definition.body, 1)
        fields, reads, loads = [], [], []
        for setting in RULE_SETTINGS:
            value = {"double": f"DoubleOfBits(h.{setting.name})", "bool": f"h.{setting.name}",
                     "float32": f"static_cast<double>(h.{setting.name})"}[setting.kernel]
            default = (("true" if setting.default else "false") if setting.kernel == "bool"
                       else repr(float(setting.default)))
            cxx_type = "bool" if setting.kernel == "bool" else "double"
            name = self.cxx_name(setting.name)
            fields.append(f"  {cxx_type} {name};")
            loads.append(f"    s.{name} = {value};")
            read = f"s.{name}"
            if setting.keyword_only:  # folded to its default in the loops without them
                read = f"kKeywordOptions ? {read} : {default}"
            reads.append(f"  const {cxx_type} {name} = {read};")
        for cxx_type, name, value in (("double", "l2_coeff", "DoubleOfBits(h.l2_coeff)"),
                                      ("bool", "has_l2", "h.has_l2"),
                                      ("bool", "first_step", "h.first_step")):
            fields.append(f"  {cxx_type} {name};")
            loads.append(f"    s.{name} = {value};")
            reads.append(f"  const {cxx_type} {name} = s.{name};")
        declarations = self.declarations()
        settings = (
            "// Generated by paddle_momentum/_generate.py from paddle_momentum/rule.py\n"
            "// (momentum_update) and _settings.RULE_SETTINGS. Do not edit: edit rule.py\n"
            "// (python -m paddle_momentum build --show prints this).\n"
            "// The rule's settings, read from the attributes once per loop.\n"
            "struct RuleSettings {\n" + "\n".join(fields) + "\n"
            "  static RuleSettings Of(const Attributes& h) {\n    RuleSettings s;\n"
            + "\n".join(loads) + "\n    return s;\n  }\n};\n\n")
        header = (
            "// One element's update: one C++ operation per Paddle operation, in the rule's\n"
            "// order (kKeywordOptions false: the keyword-only settings at their defaults).\n"
            "template <typename MT, typename R, bool kKeywordOptions>\n"
            "PM_ALWAYS_INLINE void RuleUpdate(const RuleSettings& s, const MT lr_in, "
            "MT& param_io, "
            "const MT grad_in, MT& velocity_io) {\n")
        setup = ["  MT param = param_io, grad = grad_in, velocity = velocity_io;",
                 "  const MT lr = lr_in;"]
        return (settings + header + "\n".join(reads + setup + declarations + self.out)
                + "\n}\n")

    def gradient_function(self, definition: ast.FunctionDef, cxx_name: str):
        """``MT cxx_name(...)``: one element's gradient op; ``param`` and ``grad`` are the
        element's, any other argument a Python number (a double); ``add_n_first``: where
        ``add_n`` meets two NaNs at this element, Paddle keeps the first's (decided by the
        element's position in its tensor: the kernel's ``AddNKeepsFirst``)."""
        arguments = definition.args
        if arguments.vararg or arguments.kwarg or arguments.defaults or arguments.kw_defaults:
            self.fail(definition, "a gradient op's arguments must be plain")
        names = [a.arg for a in arguments.args + arguments.kwonlyargs]
        parameters, setup = [], []
        for name in names:
            tensor = name in ("param", "grad")
            if name in _TENSOR_ARGUMENTS and not tensor:
                self.fail(definition, f"a gradient op takes param, grad and numbers, not {name!r}")
            self.kinds[name] = ELEMENT if tensor else HOST
            cxx = self.cxx_name(name)
            if tensor:
                parameters.append(f"const MT {cxx}_in")
                setup.append(f"  MT {cxx} = {cxx}_in;")
            else:
                parameters.append(f"const double {cxx}")
        self.block(definition.body, 1)
        declarations = self.declarations()
        header = (f"// rule.{definition.name}: one element, every op rounded to T as Paddle's "
                  "ops of the\n// gradient's type do.\n"
                  "template <typename T, typename MT>\n"
                  f"PM_ALWAYS_INLINE MT {cxx_name}("
                  + ", ".join(parameters + ["const bool add_n_first"]) + ") {\n"
                  "  (void)add_n_first;\n")
        return header + "\n".join(setup + declarations + self.out) + "\n}\n"

    def declarations(self):
        """The C++ declarations of the locals the body assigns (its arguments are declared
        by the signature: an argument reassigned is refused in ``assign``)."""
        return [f"  {'MT' if kind in _TENSOR else 'double' if kind == HOST else 'bool'}"
                f" {self.cxx_name(name)}{{}};" for name, kind in self.declared.items()]

    def block(self, statements, depth):
        for statement in statements:
            self.statement(statement, depth)

    def emit(self, depth, text, node=None):
        where = ""
        if node is not None and hasattr(node, "lineno"):
            python = self.lines[node.lineno - 1].strip()
            where = f"  // rule.py:{self.line_offset + node.lineno}: {python}"
        self.out.append("  " * depth + text + where)

    def statement(self, node, depth):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            return  # the docstring
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            return self.assign(node.targets[0].id, node.value, node, depth)
        if isinstance(node, ast.If):
            return self.if_statement(node, depth)
        if isinstance(node, ast.Return):
            return self.return_statement(node, depth)
        if isinstance(node, ast.Pass):
            return None
        return self.fail(node, "a statement the kernel generator cannot translate")

    def assign(self, name, value, node, depth):
        if isinstance(value, ast.BoolOp) and any(
                isinstance(v, ast.Name) and v.id == "round_result" for v in value.values):
            self.rounding.add(name)  # rnd = round_result or _exact
            return
        code, kind = self.expression(value)
        if kind not in (ELEMENT, SCALAR, HOST, BOOL):
            self.fail(node, "a value the kernel cannot hold")
        if name in _TENSOR_ARGUMENTS or name in self.kinds and self.kinds[name] in _TENSOR:
            if kind not in _TENSOR:
                self.fail(node, f"{name} is a tensor, assigned a Python value")
            kind = ELEMENT if ELEMENT in (kind, self.kinds.get(name)) else kind
        elif name in self.kinds and name not in self.declared:
            self.fail(node, f"the setting {name!r} is reassigned")
        elif name in self.declared and (self.declared[name] in _TENSOR) != (kind in _TENSOR):
            self.fail(node, f"{name} holds a tensor in one place, a Python value in another")
        if name not in _TENSOR_ARGUMENTS:
            previous = self.declared.get(name)
            self.declared[name] = ELEMENT if ELEMENT in (kind, previous) else kind
        self.kinds[name] = self.declared.get(name, kind)
        self.emit(depth, f"{self.cxx_name(name)} = {code};", node)

    def if_statement(self, node, depth):
        condition = self.condition(node.test)
        self.emit(depth, f"if ({condition}) {{", node)
        self.block(node.body, depth + 1)
        if node.orelse:
            if len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If):
                self.emit(depth, "} else {")
                self.if_statement(node.orelse[0], depth + 1)
            else:
                self.emit(depth, "} else {")
                self.block(node.orelse, depth + 1)
        self.emit(depth, "}")

    def return_statement(self, node, depth):
        value = node.value
        if self.gradient:
            code, kind = self.expression(value) if value is not None else ("", None)
            if kind not in _TENSOR:
                self.fail(node, "a gradient op must return one tensor")
            return self.emit(depth, f"return {code};", node)
        if not (isinstance(value, ast.Tuple) and len(value.elts) == 2):
            self.fail(node, "the rule must return (new_param, new_velocity)")
        new_param, param_kind = self.expression(value.elts[0])
        new_velocity, velocity_kind = self.expression(value.elts[1])
        if param_kind not in _TENSOR or velocity_kind not in _TENSOR:
            self.fail(node, "the rule must return two tensors")
        self.emit(depth, f"param_io = {new_param};", node)
        self.emit(depth, f"velocity_io = {new_velocity};")
        self.emit(depth, "return;")

    # ------------------------------------------------------------------ expressions
    def condition(self, node) -> str:
        code, kind = self.expression(node)
        if kind == BOOL:
            return code
        if kind == HOST:
            return f"({code}) != 0.0"
        return self.fail(node, "a condition on a tensor (the rule may branch on settings only;"
                               " use paddle.where)")

    def expression(self, node):
        """``(C++ code, kind)`` of ``node`` (a gradient op: each tensor result rounded)."""
        code, kind = self._expression(node)
        if self.gradient and kind in _TENSOR and not isinstance(node, (ast.Name, ast.Constant)):
            return f"RoundTo<T, MT>({code})", kind
        return code, kind

    def number(self, value):
        """A Python number as an operand of a Paddle op on tensors (``Scalar.to<T>()``)."""
        return (f"static_cast<MT>(ScalarAs<T>({value}))" if self.gradient
                else f"static_cast<MT>({value})")

    def _expression(self, node):
        if isinstance(node, ast.Name):
            if node.id not in self.kinds:
                self.fail(node, f"the name {node.id!r} (not an argument nor assigned before)")
            return self.cxx_name(node.id), self.kinds[node.id]
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                return ("true" if node.value else "false"), BOOL
            if isinstance(node.value, (int, float)):
                return repr(float(node.value)), HOST
            self.fail(node, "a constant that is not a number")
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.UnaryOp):
            operand, kind = self.expression(node.operand)
            if isinstance(node.op, ast.USub):
                if kind in _TENSOR:  # Paddle's neg of a tensor is scale(x, -1, bias 0)
                    return f"(({operand}) * MT(-1) + MT(0))", kind
                if kind == HOST:
                    return f"(-({operand}))", HOST
            if isinstance(node.op, ast.Not) and kind in (BOOL, HOST):
                return f"!({self.condition(node.operand)})", BOOL
            self.fail(node, "a unary operation the kernel generator cannot translate")
        if isinstance(node, ast.BoolOp):
            joiner = " && " if isinstance(node.op, ast.And) else " || "
            return "(" + joiner.join(f"({self.condition(v)})" for v in node.values) + ")", BOOL
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.IfExp):
            test = self.condition(node.test)
            yes, yes_kind = self.expression(node.body)
            no, no_kind = self.expression(node.orelse)
            return f"(({test}) ? {yes} : {no})", self.merged(node, yes_kind, no_kind)
        if isinstance(node, ast.Call):
            return self.call(node)
        return self.fail(node, "an expression the kernel generator cannot translate")

    def merged(self, node, a, b):
        if a == b:
            return a
        if a in _TENSOR and b in _TENSOR:
            return ELEMENT
        return self.fail(node, "a choice between a tensor and a Python value")

    def binary(self, node):
        left, left_kind = self.expression(node.left)
        right, right_kind = self.expression(node.right)
        op = type(node.op)
        symbols = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
        if op not in symbols:
            self.fail(node, "an arithmetic operation the kernel generator cannot translate")
        symbol = symbols[op]
        if left_kind == HOST and right_kind == HOST:  # Python arithmetic: doubles
            return f"({left} {symbol} {right})", HOST
        if left_kind in _TENSOR and right_kind in _TENSOR:
            kind = ELEMENT if ELEMENT in (left_kind, right_kind) else SCALAR
            if left_kind == right_kind and op is ast.Add:
                return f"AddKeepFirst({left}, {right})", kind
            if left_kind == right_kind and op is ast.Mult:
                return f"MulKeepFirst({left}, {right})", kind
            return f"({left} {symbol} {right})", kind
        if left_kind in _TENSOR and right_kind == HOST:
            return self.scale(node, left, left_kind, symbol, right, reflected=False)
        if left_kind == HOST and right_kind in _TENSOR:
            return self.scale(node, right, right_kind, symbol, left, reflected=True)
        return self.fail(node, "an operation between a tensor and a non-number")

    def scale(self, node, tensor, kind, symbol, number, reflected):
        """A tensor and a Python number: Paddle's scale op, ``x * s + b`` in the tensor's
        type, as dygraph runs ``*``, ``+``, ``-`` (``/`` by a number: a divide)."""
        s = self.number
        if symbol == "*":  # (a gradient op: the product rounded to T first, as in Eigen)
            product = f"{tensor} * {s(number)}"
            product = f"RoundTo<T, MT>({product})" if self.gradient else product
            return f"({product} + MT(0))", kind
        if symbol == "+":
            return f"({tensor} * MT(1) + {s(number)})", kind
        if symbol == "-" and not reflected:
            return f"({tensor} * MT(1) + {s(f'-({number})')})", kind
        if symbol == "-":
            return f"({tensor} * MT(-1) + {s(number)})", kind
        if not reflected:  # t / x: a full tensor, then divide
            return f"({tensor} / {s(number)})", kind
        return f"({s(number)} / {tensor})", kind

    def compare(self, node):
        if len(node.ops) != 1:
            self.fail(node, "a chained comparison")
        op, right_node = node.ops[0], node.comparators[0]
        if isinstance(op, (ast.Is, ast.IsNot)):
            negate = isinstance(op, ast.IsNot)
            left = node.left
            constant = right_node.value if isinstance(right_node, ast.Constant) else object()
            if isinstance(left, ast.Name) and left.id == "l2_coeff" and constant is None:
                return ("has_l2" if negate else "!has_l2"), BOOL
            if isinstance(left, ast.Name) and self.kinds.get(left.id) == BOOL \
                    and constant in (True, False):
                positive = constant is not negate
                return (self.cxx_name(left.id) if positive
                        else f"!{self.cxx_name(left.id)}"), BOOL
            self.fail(node, "an identity test other than `l2_coeff is None` or `flag is True`")
        symbols = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
                   ast.GtE: ">="}
        if type(op) not in symbols:
            self.fail(node, "a comparison the kernel generator cannot translate")
        left, left_kind = self.expression(node.left)
        right, right_kind = self.expression(right_node)
        tensors = left_kind in _TENSOR or right_kind in _TENSOR
        if tensors:  # Paddle compares with the number in the tensor's dtype
            left = self.number(left) if left_kind == HOST else left
            right = self.number(right) if right_kind == HOST else right
        return f"({left} {symbols[type(op)]} {right})", MASK if tensors else BOOL

    def call(self, node):
        function = node.func
        name = ast.unparse(function)
        arguments = node.args
        if node.keywords:
            self.fail(node, "a call with keyword arguments")
        if isinstance(function, ast.Name) and function.id in self.rounding:
            value, kind = self.expression(arguments[0])
            if kind not in _TENSOR:
                self.fail(node, "rounding a Python value")
            return f"RoundTo<R, MT>({value})", kind
        if name == "attribute" and len(arguments) == 2:
            value, kind = self.expression(arguments[0])
            if kind != HOST:
                self.fail(node, "attribute() of a value that is not a Python number")
            return f"static_cast<MT>(static_cast<float>({value}))", SCALAR
        if name == "as_float32_attribute" and len(arguments) == 1:
            value, kind = self.expression(arguments[0])
            return f"static_cast<double>(static_cast<float>({value}))", HOST
        if name == "paddle.where" and len(arguments) == 3:
            condition, condition_kind = self.expression(arguments[0])
            yes, yes_kind = self.expression(arguments[1])
            no, no_kind = self.expression(arguments[2])
            if condition_kind not in (BOOL, MASK):
                self.fail(node, "paddle.where on a value that is not a condition")
            return f"(({condition}) ? {yes} : {no})", self.merged(node, yes_kind, no_kind)
        if name == "paddle.sign" and len(arguments) == 1:
            value, kind = self.tensor(arguments[0], node)
            return f"SignOf({value})", kind
        if name == "paddle.clip" and len(arguments) == 3:
            value, kind = self.tensor(arguments[0], node)
            low, high = (self.host(a, node) for a in arguments[1:])
            return f"ClipTo({value}, {self.number(low)}, {self.number(high)})", kind
        if name == "paddle.scale" and len(arguments) == 2:  # (bias 0, after the scale)
            value, kind = self.tensor(arguments[0], node)
            return self.scale(node, value, kind, "*", self.host(arguments[1], node),
                              reflected=False)
        if name == "paddle.add_n" and len(arguments) == 1:
            return self.add_n(arguments[0], node)
        return self.fail(node, f"the call {name}() (no C++ counterpart in the generator)")

    def tensor(self, node, call):
        code, kind = self.expression(node)
        if kind not in _TENSOR:
            self.fail(call, "a Paddle op on a value that is not a tensor")
        return code, kind

    def host(self, node, call):
        code, kind = self.expression(node)
        if kind != HOST:
            self.fail(call, "an argument that must be a Python number")
        return code

    def add_n(self, listed, node):
        """``paddle.add_n([a, b])``: where both are NaN, Paddle's CPU add_n keeps one or the
        other by the element's position in its tensor (``AddN``), which only a gradient op
        is told (``add_n_first``)."""
        if not (isinstance(listed, ast.List) and len(listed.elts) == 2):
            self.fail(node, "add_n of anything but a list of two tensors")
        if not self.gradient:
            self.fail(node, "add_n in the update (its NaN choice depends on the element's "
                            "position; write a + b)")
        (a, a_kind), (b, b_kind) = (self.tensor(e, node) for e in listed.elts)
        return f"AddN({a}, {b}, add_n_first)", self.merged(node, a_kind, b_kind)
