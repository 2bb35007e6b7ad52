"""Every python block of README.md and docs/ runs, with the setup it states (its prose
names what it assumes: a model, batches, an optimizer), in a fresh process."""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]

_MODEL = "import paddle\nfrom paddle_momentum import Momentum\nmodel = paddle.nn.Linear(4, 2)\n"
# (file, block index) -> what the block assumes, run before it; EDIT: the block is an edit of
# rule.py, applied and run by tests/test_rule_corpus.py; PYTEST: a test file, run by pytest;
# QUOTE: functions of rule.py as they are
SETUPS = {
    ("README.md", 0): "",
    ("docs/change_the_rule.md", 0): "",
    ("docs/change_the_rule.md", 1): "",
    ("docs/change_the_rule.md", 2): "",
    ("docs/change_the_rule.md", 3): "QUOTE",
    ("docs/distributed.md", 0): "",
    # (inside each rank of a two-process gloo job, as the page says)
    ("docs/distributed.md", 1): (
        "import paddle\nimport paddle.distributed as dist\nfrom paddle_momentum import Momentum\n"
        "BLOCK = {block!r}\n"
        "def train():\n    dist.init_parallel_env()\n"
        "    exec(BLOCK, {{'paddle': paddle, 'Momentum': Momentum,\n"
        "                  'model': paddle.nn.Linear(4, 2)}})\n"
        "if __name__ == '__main__':\n    dist.spawn(train, nprocs=2, backend='gloo')\n"),
    ("docs/testing.md", 0): "PYTEST",
    ("docs/usage.md", 0): "",
    ("docs/usage.md", 1): ("import paddle\nfrom paddle_momentum import Momentum\n"
                           "backbone, head = paddle.nn.Linear(4, 4), paddle.nn.Linear(4, 2)\n"),
    ("docs/usage.md", 2): ("import numpy as np\nbatches = [(np.ones([8, 2], 'float32'), "
                           "np.ones([8, 1], 'float32')) for _ in range(3)]\n"),
    ("docs/usage.md", 3): _MODEL + ("optimizer = Momentum(0.1, parameters=model.parameters())\n"
                                    "start, steps = 0, 3\n"),
}


def python_blocks():
    """``{(file, index): code}`` of every python block."""
    blocks = {}
    for path in DOCS:
        for index, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(),
                                                re.S)):
            blocks[(str(path.relative_to(ROOT)), index)] = code
    return blocks


def test_every_block_has_its_setup():
    assert sorted(python_blocks()) == sorted(SETUPS), "a python block was added or removed: " \
        "give it its setup here"


@pytest.mark.parametrize("where", sorted(k for k, v in SETUPS.items()
                                         if v not in ("EDIT", "QUOTE")),
                         ids=lambda where: f"{where[0]}#{where[1]}")
def test_block_runs(where, tmp_path):
    setup, block = SETUPS[where], python_blocks()[where]
    code = setup.format(block=block) if "{block" in setup else setup + block
    if setup == "PYTEST":
        code = block
    pytest_file = setup == "PYTEST"
    script = tmp_path / ("test_block.py" if pytest_file else "block.py")
    script.write_text(block if pytest_file else code)
    command = ([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
               if pytest_file else [sys.executable, str(script)])
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{where}:\n{code}\n{done.stderr[-3000:]}"


def test_edit_blocks_are_the_edits_tested():
    import test_rule_corpus

    for where, setup in SETUPS.items():
        if setup == "EDIT":
            assert python_blocks()[where] in [new for edits in test_rule_corpus.EDITS.values()
                                              for _, new in edits]


def test_quoted_blocks_are_the_source():
    """A QUOTE block shows functions of rule.py as they are (docstrings left out)."""
    functions = {node.name: node for node in ast.parse((ROOT / "paddle_momentum" / "rule.py")
                                                       .read_text()).body
                 if isinstance(node, ast.FunctionDef)}
    for where, setup in SETUPS.items():
        if setup == "QUOTE":
            for quoted in ast.parse(python_blocks()[where]).body:
                source = functions[quoted.name]
                body = [s for s in source.body if not (isinstance(s, ast.Expr) and isinstance(
                    s.value, ast.Constant) and isinstance(s.value.value, str))]
                source = ast.FunctionDef(**{**vars(source), "body": body})
                assert ast.dump(quoted) == ast.dump(source), f"{where}: {quoted.name}"
