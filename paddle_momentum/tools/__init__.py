"""Tools around the optimizer, not part of it: the benchmark (``bench``), the differential
matrix against the built-in (``parity``), the demos (``demo``, ``mlp_demo``) and their plots
(``plotting``). Run them as ``python -m paddle_momentum demo|parity|bench``. The optimizer's
modules import none of these, and ``import paddle_momentum`` loads none."""
