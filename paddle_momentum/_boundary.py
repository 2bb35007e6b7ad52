"""The fused kernel's boundary, typed: what crosses into ``csrc/momentum_kernel.cc``.

Every update op takes the same attributes (``PM_ATTRIBUTES`` there, the only list of them in
C++). They are passed by name, so the Python side lists none of them: the rule's settings come
from their declarations (``_declarations.RULE_SETTINGS``), each converted as its ``kernel`` type
says; the gradient ops from :class:`GradientOps`. No number crosses as text: a double is
passed as its 64 bits, so no locale can change it and a NaN keeps its sign.
"""

from __future__ import annotations

import dataclasses
import struct

from ._declarations import RULE_SETTINGS, torch_option_on
from .rule import as_float32_attribute


@dataclasses.dataclass(frozen=True)
class GradientOps:
    """What the built-in does to a bucket member's gradient before its kernel, with this
    step's values (None: not done): ``ClipGradByValue`` (``clip_min``, ``clip_max``), a global
    norm's factor (``scale``, written back into the gradient), ``ClipGradByNorm``
    (``max_norm``: each gradient scaled by its own norm), and the ``L1Decay`` term (``l1``).
    The clips apply to the members whose gradient-table row says so (their ``need_clip``)."""

    clip_min: float | None = None
    clip_max: float | None = None
    scale: float | None = None
    max_norm: float | None = None
    l1: float | None = None

    def attributes(self) -> dict:
        return dict(has_clip=self.clip_min is not None, clip_min=bits(self.clip_min),
                    clip_max=bits(self.clip_max), has_l1=self.l1 is not None, l1=bits(self.l1),
                    has_scale=self.scale is not None, scale=bits(self.scale),
                    has_norm_clip=self.max_norm is not None, max_norm=bits(self.max_norm))


NO_GRADIENT_OPS = GradientOps()


def bits(value) -> int:
    """A double's 64 bits as an int64 attribute (0 for None): exact, NaN signs kept."""
    return 0 if value is None else struct.unpack("<q", struct.pack("<d", value))[0]


_KERNEL_TYPES = {"float32": as_float32_attribute, "double": bits, "bool": bool}


def kernel_attributes(options: dict, gradient_ops=NO_GRADIENT_OPS, first_step=False) -> dict:
    """The kernel's attributes by name: ``options`` are the rule's keyword arguments
    (``ParamSettings.rule_options()``: the rule settings and ``l2_coeff``, None for no fused
    decay), ``first_step`` whether this is the parameters' first update (dampening)."""
    attributes = {s.name: _KERNEL_TYPES[s.kernel](options[s.name]) for s in RULE_SETTINGS}
    l2_coeff = options["l2_coeff"]
    attributes.update(l2_coeff=bits(l2_coeff), has_l2=l2_coeff is not None,
                      first_step=bool(first_step),
                      keyword_options=torch_option_on(
                          tuple(options[s.name] for s in RULE_SETTINGS)),
                      **gradient_ops.attributes())
    return attributes
