"""The update rule an optimizer runs, as one object: the Python function, the inputs it
takes, its translation into the fused kernel, and whether that translation is still the
function's.

``Momentum(rule=fn)`` makes a :class:`Rule` of ``fn``; without it the optimizer runs
:data:`DEFAULT`, the package's ``rule.momentum_update`` looked up at every use (an edited
``rule.py``, or a function put in its place, is what runs). The composed ops call the
:class:`Rule` (the function with the inputs it takes); the fused kernel is generated from it
(``_generate``, following its calls and constants) and compiled once per translation
(``_kernel``). Every step asks :meth:`Rule.kernel`, which checks in a few microseconds that
nothing the translation read has changed (``_translate.Identity``): a function replaced, a
constant rebound, anywhere in the rule's closure, makes a new translation, whose kernel builds
in the background while the composed ops run the new rule. Never a stale kernel.
"""

from __future__ import annotations

from . import _build, _generate, _kernel, rule
from ._declarations import RULE_SETTING_NAMES, RULE_SETTINGS
from ._source import CannotGenerate, Identity, SourceDoesNotParse, source_of


class Rule:
    """The rule ``function`` (``(param, grad, velocity, lr, **settings) -> (new_param,
    new_velocity)``; None: the package's ``rule.momentum_update``, looked up at every use).
    TypeError at once where ``function`` cannot be a rule (see ``_generate.received``)."""

    def __init__(self, function=None):
        if function is not None and not callable(function):
            raise TypeError(f"rule must be a function (param, grad, velocity, lr, **settings) "
                            f"-> (new_param, new_velocity), got {function!r}")
        self._given = function
        self.receives = _generate.INPUTS if function is None else _generate.received(function)
        if function is not None:
            try:
                source_of(function)
            except SourceDoesNotParse as error:
                raise SyntaxError(f"rule={self.name}: {error}") from None
            except CannotGenerate:
                pass  # (said when it is translated: the composed ops run it)
        self._takes_all = set(self.receives) == set(_generate.INPUTS)
        self._generated = None  # the current translation
        self._failure = None  # [CannotGenerate, Identity, warned]: why the current one cannot be
        self._ops = None  # the current translation's kernel, once loaded

    @property
    def is_default(self) -> bool:
        return self._given is None

    def function(self):
        return self._given if self._given is not None else rule.momentum_update

    @property
    def name(self) -> str:
        function = self.function()
        return (f"{getattr(function, '__module__', None) or '?'}."
                f"{getattr(function, '__qualname__', function)}")

    @staticmethod
    def gradient_op_functions():
        """``rule.py``'s gradient ops, looked up now (every rule uses them)."""
        return rule.clip_by_value, rule.l1_decay

    def __call__(self, param, grad, velocity, lr, **inputs):
        """The rule on Paddle tensors (the composed ops), given the inputs it takes."""
        if not self._takes_all:
            inputs = {name: value for name, value in inputs.items() if name in self.receives}
        return self.function()(param, grad, velocity, lr, **inputs)

    def refuse_unreceived(self, values: dict, where: str = ""):
        """TypeError where ``values`` (setting name -> value, and ``l2_coeff``) hold a value
        off its default that this rule does not take: it would be ignored silently."""
        if self._takes_all:
            return
        for setting in RULE_SETTINGS:
            if (setting.name in values and setting.name not in self.receives
                    and not _equal(values[setting.name], setting.default)):
                raise TypeError(f"{where}{setting.name}={values[setting.name]!r}, but "
                                f"rule={self.name} does not take {setting.name!r}: give the "
                                f"rule that argument, or leave {setting.name} at its default "
                                f"{setting.default!r}")
        if values.get("l2_coeff") is not None and "l2_coeff" not in self.receives:
            raise TypeError(f"{where}weight_decay is an L2 coefficient "
                            f"({values['l2_coeff']!r}), but rule={self.name} does not take "
                            "'l2_coeff': give the rule that argument, or use no weight decay")

    def refuse_group(self, group_settings, where: str):
        """:meth:`refuse_unreceived` for a group's settings now (``_settings.GroupSettings``:
        checked at every step, so nothing is built for a rule that takes them all)."""
        if not self._takes_all:
            self.refuse_unreceived(dict(zip(RULE_SETTING_NAMES, group_settings.rule),
                                        l2_coeff=group_settings.l2_coeff), where)

    def translation(self, quiet=False):
        """The current translation (a ``_generate.Generated``), or None where the rule cannot
        be translated (one warning, unless ``quiet``, per reason). A few microseconds when
        nothing changed."""
        generated = self._generated
        if generated is not None and generated.identity.fresh():
            return generated
        if self._failure is not None and self._failure[1].fresh():
            if not quiet:
                self._warn_failure()
            return None
        identity = Identity()
        root = (self._given if self._given is not None
                else identity.lookup(vars(rule), "momentum_update"))
        self._ops = None
        try:
            generated = _generate.generate(root, identity=identity)
            changed = identity.what_changed()
            if changed:  # (read again, it is another object: a property, say)
                raise CannotGenerate(f"{changed} is a new object at every read (a property "
                                     "or a computed attribute): the kernel cannot follow it")
            self._generated, self._failure = generated, None
        except Exception as error:  # noqa: BLE001 - the translator's own failure too
            if not isinstance(error, CannotGenerate):
                error = CannotGenerate(f"the translation failed ({type(error).__name__}: "
                                       f"{error})")
            self._generated, self._failure = None, [error, identity, False]
            if not quiet:
                self._warn_failure()
            return None
        return self._generated

    def _warn_failure(self):
        if not self._failure[2]:
            self._failure[2] = True
            message = (f"the fused kernel cannot run {self.name} ({self._failure[0]}); "
                       f"{_kernel.COMPOSED_COST}")
            if message not in _WARNED:  # (once per process, however many optimizers)
                _WARNED.add(message)
                _build.warn(message)

    def static_float64_differs(self) -> bool:
        """Whether the rule's kernel would give a static program's float64 parameters other
        numbers than its composed ops: it meets tensors with Python numbers, which Paddle's
        static ops round to float32 there (dygraph does not, nor the kernel). Then the
        composed ops run them, after one warning."""
        generated = self._generated
        if generated is None or not generated.number_ops:
            return False
        message = (f"rule {self.name} multiplies or adds tensors and Python numbers, which a "
                   "static program computes with the number rounded to float32 for float64 "
                   "tensors (dygraph and the fused kernel do not): the composed ops run its "
                   "float64 parameters in static programs (write numbers as attribute(x, t) "
                   "for the kernel)")
        if message not in _WARNED:
            _WARNED.add(message)
            _build.warn(message)
        return True

    def why_not(self) -> str:
        """Why the current translation failed ('' where it did not)."""
        return str(self._failure[0]) if self._failure is not None else ""

    def kernel(self, wait=False):
        """The fused kernel's ops for the rule as it is now, or None: it cannot be translated,
        built or checked (one warning), or (``wait`` False) it is still being built, in the
        background, while the caller runs the composed ops."""
        generated = self.translation()
        if generated is None:
            return None
        if self._ops is None:
            self._ops = _kernel.ops_for(generated, self, wait, plain_allowed=self.is_default)
        return self._ops


def _equal(value, default) -> bool:
    try:
        return bool(value == default)
    except Exception:  # noqa: BLE001 - a Tensor of several elements: not the default
        return False


_WARNED = set()
DEFAULT = Rule()


def load():
    """The package rule's kernel (built now if need be), or None."""
    return DEFAULT.kernel(wait=True)


def load_if_built():
    """The package rule's kernel when this machine's cache holds it, built and checked (a
    few ms), else None without building anything: run at import, so that a saved static
    program with our ops runs in a new process."""
    generated = DEFAULT.translation(quiet=True)
    if generated is None or not _kernel.loadable(generated, plain_allowed=True):
        return None
    return DEFAULT.kernel(wait=True)
