"""Numbers the Python side and the C++ sources share, defined here only.

``_build`` passes each to the compiler as ``-DPM_<NAME>=<value>`` (and hashes them into the
cache key), so ``csrc/gradient_table.cc``, ``csrc/momentum_kernel.cc`` and the Python code
that writes or reads a gradient table cannot disagree.
"""

# The rows of a gradient table (int64 [TABLE_ROW_COUNT, members]): gradient_table.cc checks
# the first two and the dtype and writes the gradient addresses; the Python side writes the
# members' values (_flat.FlatBucket.write_values), which the kernel reads every step.
TABLE_ROWS = {
    "PARAM_ADDRESS": 0,  # where each member's data must be (the table's check)
    "SIZE": 1,  # its number of elements
    "GRAD_ADDRESS": 2,  # written by each fill: its gradient's data (0: none usable)
    "DTYPE": 3,  # its dtype code (gradient_table.cc's pm_tensor_dtype)
    "LR_SCALE": 4,  # the 64 bits of its learning-rate scale (a double; 1.0: none)
    "CLIPPED": 5,  # 1 where the group's clip applies to it (its need_clip), else 0
}
TABLE_ROW_COUNT = len(TABLE_ROWS)

# What a fill reports for member i's problem: -(PROBLEM_STRIDE * i + code).
PROBLEM_STRIDE = 8
TABLE_PROBLEMS = {
    "NOT_TENSOR": (1, "not a paddle.Tensor"),
    "PARAM": (2, "parameter not a dense contiguous tensor of the bucket's dtype and size"),
    "MOVED": (3, "parameter storage moved"),
    "GRAD": (4, "gradient not a dense contiguous CPU tensor of the parameter's dtype and size"),
    "TABLE": (5, "bad table"),
    "SETTINGS": (6, "settings attributes changed"),
}


def compiler_defines():
    """The ``-D`` flags that give the C++ sources these numbers."""
    defines = [f"-DPM_ROW_{name}={row}" for name, row in TABLE_ROWS.items()]
    defines += [f"-DPM_TABLE_ROW_COUNT={TABLE_ROW_COUNT}", f"-DPM_PROBLEM_STRIDE={PROBLEM_STRIDE}"]
    defines += [f"-DPM_PROBLEM_{name}={code}" for name, (code, _) in TABLE_PROBLEMS.items()]
    return defines


# What a table fill reports for member i's problem, -(PROBLEM_STRIDE * i + code): the codes
GRADIENT_UNFIT = TABLE_PROBLEMS["GRAD"][0]
SETTINGS_CHANGED = TABLE_PROBLEMS["SETTINGS"][0]


def table_problem(code: int):
    """``(member index, problem code)`` of a negative table result."""
    return (-code) // PROBLEM_STRIDE, (-code) % PROBLEM_STRIDE
