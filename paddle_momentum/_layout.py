"""Numbers the Python side and the C++ sources share, defined here only.

``_build`` passes each to the compiler as ``-DPM_<NAME>=<value>`` (and hashes them into the
cache key), so ``csrc/gradient_table.cc``, ``csrc/momentum_kernel.cc`` and the Python code
that writes or reads a gradient table cannot disagree.
"""

# The rows of a gradient table (int64 [TABLE_ROW_COUNT, members]), one column per member of a
# flat bucket. A bucket is memory: the first rows and the state addresses say where each
# member's tensors live, and gradient_table.cc checks them at every fill. The others are this
# step's values, written by the Python side (_flat.FlatBucket) and read by the kernel at every
# call: the gradient's address (written by the fill: 0 where the call skips the member), the
# learning-rate scale, the flags and the decay coefficients.
TABLE_ROWS = {
    "PARAM_ADDRESS": 0,  # where each member's data must be (the table's check)
    "SIZE": 1,  # its number of elements
    "GRAD_ADDRESS": 2,  # written by each fill: its gradient's data (0: not updated by the call)
    "DTYPE": 3,  # its dtype code (gradient_table.cc's pm_tensor_dtype)
    "LR_SCALE": 4,  # the 64 bits of its learning-rate scale (a double; 1.0: none)
    "FLAGS": 5,  # TABLE_FLAGS: what the call does to the member this step
    "L2": 6,  # the 64 bits of its fused L2 coefficient (a double; with the HAS_L2 flag)
    "L1": 7,  # the 64 bits of its L1Decay coefficient (a double; with the HAS_L1 flag)
    "VELOCITY_ADDRESS": 8,  # where its velocity's data must be (the table's check)
    "MASTER_ADDRESS": 9,  # where its master weight's data must be (0: none)
    "STATUS": 10,  # written by a fill that reports a problem: STATUS_CODES per member
}
TABLE_ROW_COUNT = len(TABLE_ROWS)
TABLE_FLAGS = {
    "IN_CALL": 1,  # the call updates the member (else it skips it: another path does, or none)
    "CLIPPED": 2,  # the group's clip applies to it (its need_clip)
    "HAS_L2": 4,  # its gradient takes the L2 term of the L2 row (in the rule: l2_coeff)
    "HAS_L1": 8,  # its gradient takes the L1Decay term of the L1 row
    "FIRST_STEP": 16,  # its first update since its velocity was made (the rule's first_step)
    # Its L2 (L1) row is the ``_coeff`` of its ``regularizer`` attribute, an L2Decay (L1Decay):
    # the fill reads it at every step, and takes a new object of the same type as it is.
    "OWN_L2": 32,
    "OWN_L1": 64,
}
STATUS_CODES = {"ATTRIBUTES": 1, "GRADIENT": 2}  # attribute objects changed; gradient unfit

# What a fill reports for member i's problem: -(PROBLEM_STRIDE * i + code).
PROBLEM_STRIDE = 8
TABLE_PROBLEMS = {
    "NOT_TENSOR": (1, "not a paddle.Tensor"),
    "PARAM": (2, "parameter not a dense contiguous tensor of the bucket's dtype and size"),
    "MOVED": (3, "parameter or state storage moved, or state replaced"),
    "GRAD": (4, "gradient not a dense contiguous CPU tensor of the parameter's dtype and size"),
    "TABLE": (5, "bad table"),
    "SETTINGS": (6, "settings attributes changed"),
}


def compiler_defines():
    """The ``-D`` flags that give the C++ sources these numbers."""
    defines = [f"-DPM_ROW_{name}={row}" for name, row in TABLE_ROWS.items()]
    defines += [f"-DPM_TABLE_ROW_COUNT={TABLE_ROW_COUNT}", f"-DPM_PROBLEM_STRIDE={PROBLEM_STRIDE}"]
    defines += [f"-DPM_PROBLEM_{name}={code}" for name, (code, _) in TABLE_PROBLEMS.items()]
    defines += [f"-DPM_FLAG_{name}={bit}" for name, bit in TABLE_FLAGS.items()]
    defines += [f"-DPM_STATUS_{name}={code}" for name, code in STATUS_CODES.items()]
    return defines


# What a table fill reports for member i's problem, -(PROBLEM_STRIDE * i + code): the codes
GRADIENT_UNFIT = TABLE_PROBLEMS["GRAD"][0]
SETTINGS_CHANGED = TABLE_PROBLEMS["SETTINGS"][0]


def table_problem(code: int):
    """``(member index, problem code)`` of a negative table result."""
    return (-code) // PROBLEM_STRIDE, (-code) % PROBLEM_STRIDE
