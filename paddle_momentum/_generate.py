"""The fused kernel's arithmetic, generated from the rule's Python functions.

The rule (``rule.momentum_update``, or the function a user passes as ``Momentum(rule=...)``)
and the gradient ops of ``rule.py`` (``clip_by_value``, ``l1_decay``) are the only copies of
the arithmetic. :func:`generate` translates them (``_translate``: following the calls they
make and reading the constants they use) into C++ functions that the kernel's hand-written
loops (``csrc/momentum_kernel.cc``: threads, the gradient table, the norm clips' reductions,
loads and stores) call once per element: ``RuleUpdate`` from the update, ``RuleClipByValue``
and ``RuleL1Decay`` from the gradient ops, each op of which rounds to the gradient's type.
The file is compiled without contraction, so the kernel runs the rule bit for bit, signed
zeros and NaN signs included.

The rule's arguments: four tensors by position (the parameter, its gradient, its velocity,
each one element of the compute type, and the learning rate, a 0-d tensor), then by name
the inputs it takes (:data:`INPUTS`; all of them where it takes ``**options``): the settings
declared in ``_declarations.RULE_SETTINGS`` (the kernel's attributes, whose list
``PM_RULE_ATTRIBUTES`` is generated here too), ``l2_coeff`` (None: ``has_l2`` false),
``round_result`` (``RoundTo<R, MT>``) and ``first_step``.

Paddle's semantics of a tensor-and-Python-number operation are dygraph's; a static program
runs some of them otherwise (float64: the number rounded to float32; ``t / x`` as ``t * (1 /
x) + 0``), which is why ``rule.py`` writes its scalars as 0-d tensors (``attribute``). Where
a NaN learning rate or attribute meets a NaN element, which NaN survives is not modelled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re

from . import rule
from ._cxx_ops import BOOL, ELEMENT, HOST, ROUND, SCALAR, TENSOR, TUPLE, Value
from ._declarations import RULE_SETTING_NAMES, RULE_SETTINGS
from ._translate import CannotGenerate, Identity, Translator  # noqa: F401 (re-exported)

INPUTS = RULE_SETTING_NAMES + ("l2_coeff", "round_result", "first_step")
TENSOR_ARGUMENTS = ("param", "grad", "velocity", "lr")
# The gradient ops generated beside the update: rule.py's function -> the C++ function and
# its arguments, by position (the kernel's loop calls them so).
GRADIENT_OPS = {"clip_by_value": ("RuleClipByValue", ("grad", "low", "high")),
                "l1_decay": ("RuleL1Decay", ("param", "grad", "coeff"))}


@dataclasses.dataclass(frozen=True)
class Generated:
    """The generated C++: ``attributes`` (the ``PM_RULE_ATTRIBUTES`` X-macro) and
    ``function`` (``RuleUpdate`` and the gradient ops, each line commented with the Python
    line it came from); ``digest`` hashes the code without the comments (a docstring, comment
    or blank-line edit builds nothing); ``identity`` is what it was translated from."""

    attributes: str
    function: str
    identity: Identity = dataclasses.field(compare=False, repr=False, default=None)
    # the update meets a Python number with a tensor (Paddle's scale op), which a static
    # program runs otherwise for float64 (the number rounded to float32)
    number_ops: bool = dataclasses.field(compare=False, default=False)

    @property
    def code_of_function(self) -> str:
        """``function`` without its comments."""
        return re.sub(r"[ \t]*//[^\n]*", "", self.function)

    @property
    def code(self) -> str:
        return self.attributes + self.code_of_function

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.code.encode()).hexdigest()[:12]


def attribute_macro() -> str:
    """``#define PM_RULE_ATTRIBUTES(X) ...``: the rule settings as kernel attributes."""
    types = {"double": "int64_t", "bool": "bool", "float32": "float"}
    entries = " ".join(f"X({types[s.kernel]}, {s.name})" for s in RULE_SETTINGS)
    return f"#define PM_RULE_ATTRIBUTES(X) {entries}\n"


def received(function) -> tuple:
    """The :data:`INPUTS` ``function`` takes by name after its four tensors (all of them
    with ``**options``), or TypeError saying why it cannot be a rule."""
    name = getattr(function, "__qualname__", repr(function))
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError) as error:
        raise TypeError(f"rule={name} has no signature a rule can have ({error})") from error
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY,
                                                      p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 4 and not any(p.kind == p.VAR_POSITIONAL for p in parameters):
        raise TypeError(f"rule={name} must take (param, grad, velocity, lr, **settings): it "
                        f"takes {len(positional)} positional arguments")
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        return INPUTS
    names = []
    for parameter in parameters[4:]:
        if parameter.kind == parameter.VAR_POSITIONAL:
            continue
        if parameter.name in INPUTS:
            names.append(parameter.name)
        elif parameter.default is parameter.empty:
            raise TypeError(f"rule={name}'s argument {parameter.name!r} is not an input the "
                            f"optimizer gives ({', '.join(INPUTS)}) and has no default")
    return tuple(names)


def generate(update, gradient_ops=None, identity=None) -> Generated:
    """The C++ of the rule ``update`` and the gradient ops (default: ``rule.py``'s, looked
    up now), recording what was read in ``identity``."""
    identity = identity if identity is not None else Identity()
    if gradient_ops is None:
        gradient_ops = [identity.lookup(vars(rule), name) for name in GRADIENT_OPS]
    translator = Translator(identity, reserved=INPUTS)
    parts = [_update_function(update, translator)]
    for function, (cxx_name, arguments) in zip(gradient_ops, GRADIENT_OPS.values()):
        parts.append(_gradient_function(function, cxx_name, arguments, identity))
    return Generated(attribute_macro(), "\n".join(parts), identity, translator.number_ops)


def _inputs():
    values = {s.name: Value(BOOL if s.kernel == "bool" else HOST, s.name) for s in RULE_SETTINGS}
    values.update(l2_coeff=Value(HOST, "l2_coeff", none_test="!has_l2"),
                  round_result=Value(ROUND), first_step=Value(BOOL, "first_step"))
    return values


def _update_function(update, translator):
    inputs = _inputs()
    tensors = [Value(SCALAR if name == "lr" else ELEMENT, name) for name in TENSOR_ARGUMENTS]
    keywords = {name: inputs[name] for name in received(update)}
    result = translator.call(update, tensors, keywords, owned=TENSOR_ARGUMENTS)
    if result.kind != TUPLE or len(result.value) != 2 or any(
            v.kind not in TENSOR for v in result.value):
        raise CannotGenerate(f"{update.__qualname__} must return (new_param, new_velocity), "
                             "two tensors")
    new_param, new_velocity = result.value
    fields, reads, loads = [], [], []
    for setting in RULE_SETTINGS:
        value = {"double": f"DoubleOfBits(h.{setting.name})", "bool": f"h.{setting.name}",
                 "float32": f"static_cast<double>(h.{setting.name})"}[setting.kernel]
        default = (("true" if setting.default else "false") if setting.kernel == "bool"
                   else repr(float(setting.default)))
        cxx_type = "bool" if setting.kernel == "bool" else "double"
        fields.append(f"  {cxx_type} {setting.name};")
        loads.append(f"    s.{setting.name} = {value};")
        read = f"s.{setting.name}"
        if setting.keyword_only:  # folded to its default in the loops without them
            read = f"kKeywordOptions ? {read} : {default}"
        reads.append(f"  [[maybe_unused]] const {cxx_type} {setting.name} = {read};")
    for cxx_type, name, value in (("double", "l2_coeff", "DoubleOfBits(h.l2_coeff)"),
                                  ("bool", "has_l2", "h.has_l2"),
                                  ("bool", "first_step", "h.first_step")):
        fields.append(f"  {cxx_type} {name};")
        loads.append(f"    s.{name} = {value};")
        reads.append(f"  [[maybe_unused]] const {cxx_type} {name} = s.{name};")
    settings = (
        f"// Generated by paddle_momentum/_generate.py from {update.__module__}."
        f"{update.__qualname__}\n"
        "// and _declarations.RULE_SETTINGS. Do not edit: edit the rule (python -m\n"
        "// paddle_momentum build --show prints this). The rule's settings, read from the\n"
        "// attributes once.\n"
        "struct RuleSettings {\n" + "\n".join(fields) + "\n"
        "  static RuleSettings Of(const Attributes& h) {\n    RuleSettings s;\n"
        + "\n".join(loads) + "\n    return s;\n  }\n};\n\n")
    header = (
        "// One element's update: one C++ operation per Paddle operation, in the rule's\n"
        "// order (kKeywordOptions false: the keyword-only settings at their defaults).\n"
        "template <typename MT, typename R, bool kKeywordOptions>\n"
        "PM_ALWAYS_INLINE void RuleUpdate(const RuleSettings& s, const MT lr_in, "
        "MT& param_io, const MT grad_in, MT& velocity_io) {\n")
    setup = ["  MT param = param_io, grad = grad_in, velocity = velocity_io;",
             "  MT lr = lr_in;"]
    ending = [f"  param_io = {new_param.code};", f"  velocity_io = {new_velocity.code};"]
    return (settings + header
            + "\n".join(reads + setup + translator.declarations() + translator.out + ending)
            + "\n}\n")


def _gradient_function(function, cxx_name, arguments, identity):
    """``MT cxx_name(...)``: one element's gradient op; the tensors are the element's, the
    numbers doubles; ``add_n_first``: where ``add_n`` meets two NaNs at this element, Paddle
    keeps the first's (the element's position decides: the kernel's ``AddNKeepsFirst``)."""
    translator = Translator(identity, gradient=True, reserved=arguments)
    values = [Value(ELEMENT if name in ("param", "grad") else HOST, name) for name in arguments]
    result = translator.call(function, values, {}, owned=arguments)
    if result.kind not in TENSOR:
        raise CannotGenerate(f"{function.__qualname__} must return one tensor")
    parameters = [f"const MT {name}_in" if name in ("param", "grad") else f"const double {name}"
                  for name in arguments]
    setup = [f"  MT {name} = {name}_in;" for name in arguments if name in ("param", "grad")]
    header = (f"// {function.__module__}.{function.__qualname__}: one element, every op "
              "rounded to T as Paddle's\n// ops of the gradient's type do.\n"
              "template <typename T, typename MT>\n"
              f"PM_ALWAYS_INLINE MT {cxx_name}("
              + ", ".join(parameters + ["const bool add_n_first"]) + ") {\n"
              "  (void)add_n_first;\n")
    return (header + "\n".join(setup + translator.declarations() + translator.out
                               + [f"  return {result.code};"]) + "\n}\n")
