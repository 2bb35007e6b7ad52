"""The documentation names what exists, with the signatures the code has.

docs/api.md: in every ``## `paddle_momentum.X``` section, the first call form of a name
(``name(args)``) is the signature of X's attribute (or of the class X's method) of that name:
parameter names, kinds and defaults, compared with ``inspect.signature``; later ones are
examples, whose name must exist. A call form whose name X lacks fails, except the calls of
other objects listed in ``OTHER_CALLS``. Every page: a dotted name in
the package (``paddle_momentum.a.b``, or ``_module.name`` of one of its modules) resolves, the
keywords of a ``Momentum(...)`` call are arguments ``Momentum`` takes, every ``--option`` of a
``python -m paddle_momentum <command>`` line is in that command's ``--help``, and README's
"the signature is the built-in's" is ``paddle.optimizer.Momentum``'s signature.
"""

from __future__ import annotations

import ast
import builtins
import functools
import importlib
import inspect
import pathlib
import re
import subprocess
import sys

import pytest

import paddle_momentum

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
API = ROOT / "docs" / "api.md"
PACKAGE = ROOT / "paddle_momentum"

# Calls in a section that are not of the section's own names: of a documented function's
# arguments (testing.compare's factories), or of Paddle's objects (a program's clone).
OTHER_CALLS = {"model", "optimizer", "reference", "loss", "step", "Momentum", "clone"}

_CALL = re.compile(r"^(?P<name>\.?[A-Za-z_][\w.]*)\((?P<args>.*)\)(\s*->.*)?$", re.S)
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def code_spans(text):
    """The inline code spans of a Markdown text (fenced blocks left out), whitespace-folded."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", text)]


def api_sections():
    """``[(heading, objects, [code spans])]`` of docs/api.md's ``##`` sections: the objects a
    ``paddle_momentum...`` heading names (``paddle_momentum.tools.demo``, ``.mlp_demo``: two),
    none for another heading."""
    sections = []
    for block in re.split(r"^## ", API.read_text(), flags=re.M)[1:]:
        heading, _, body = block.partition("\n")
        names = re.findall(r"`([^`]+)`", heading)
        if not names or not names[0].startswith("paddle_momentum"):
            sections.append((heading.strip(), [], code_spans(body)))  # (package names only)
            continue
        first = names[0].split("(", 1)[0]  # (a heading may be a signature itself)
        base = first.rsplit(".", 1)[0]
        owner = resolve(first)
        owners = [owner] + [resolve(base + n) for n in names[1:] if n.startswith(".")]
        if inspect.isfunction(owner):  # its signature is looked up in its module
            owners.append(resolve(base))
        body = body if names[0] == first else f"`{names[0].rsplit('.', 1)[1]}`\n{body}"
        sections.append((first, owners, code_spans(body)))
    return sections


def resolve(dotted):
    """The object a dotted name in the package names (its modules imported as needed)."""
    parts = dotted.split(".")
    if parts[0] != "paddle_momentum":
        parts = ["paddle_momentum"] + parts
    obj = importlib.import_module("paddle_momentum")
    for depth, part in enumerate(parts[1:], start=2):
        if not hasattr(obj, part) and inspect.ismodule(obj):
            try:
                importlib.import_module(".".join(parts[:depth]))
            except ModuleNotFoundError:
                pass
        if not hasattr(obj, part):
            raise LookupError(f"{'.'.join(parts[:depth])} does not exist")
        obj = getattr(obj, part)
    return obj


def package_reference(span):
    """A span that names something in the package: ``paddle_momentum.x.y`` or
    ``_module.name`` (``_module`` one of the package's files), its trailing call removed;
    None for any other span."""
    name = span.split("(", 1)[0]
    if not _DOTTED.match(name) and not re.match(r"^_[a-z]\w*$", name):
        return None
    head = name.split(".")[0]
    if head == "paddle_momentum" or (head.startswith("_") and (PACKAGE / f"{head}.py").exists()):
        return name
    return None


def documented_parameters(args):
    """``[(name, kind, default source or None)]`` of a documented argument list."""
    function = ast.parse(f"def f({args}): pass").body[0].args
    parameters = []
    positional = function.posonlyargs + function.args
    defaults = [None] * (len(positional) - len(function.defaults)) + function.defaults
    for arg, default in zip(positional, defaults):
        parameters.append((arg.arg, inspect.Parameter.POSITIONAL_OR_KEYWORD, default))
    if function.vararg:
        parameters.append((function.vararg.arg, inspect.Parameter.VAR_POSITIONAL, None))
    for arg, default in zip(function.kwonlyargs, function.kw_defaults):
        parameters.append((arg.arg, inspect.Parameter.KEYWORD_ONLY, default))
    if function.kwarg:
        parameters.append((function.kwarg.arg, inspect.Parameter.VAR_KEYWORD, None))
    return parameters


def signature_drift(obj, args, namespace):
    """What differs between ``obj``'s signature and the documented ``args`` ('' if nothing)."""
    signature = inspect.signature(obj)
    actual = [p for p in signature.parameters.values() if p.name != "self"]
    documented = documented_parameters(args)
    names = ([(p.name, p.kind.name) for p in actual], [(n, k.name) for n, k, _ in documented])
    if names[0] != names[1]:
        return f"parameters {names[0]} in the code, {names[1]} documented"
    for parameter, (name, _, default) in zip(actual, documented):
        has_default = parameter.default is not inspect.Parameter.empty
        if (default is not None) != has_default:
            return f"{name}: default {'in the code only' if has_default else 'documented only'}"
        if default is None:
            continue
        try:
            value = ast.literal_eval(default)
        except ValueError:  # a name: the module's constant, or a builtin
            source = ast.unparse(default)
            value = namespace.get(source, getattr(builtins, source, source))
            if value is not parameter.default:
                return f"{name}: default {parameter.default!r} in the code, {source} documented"
            continue
        if type(value) is not type(parameter.default) or value != parameter.default:
            return f"{name}: default {parameter.default!r} in the code, {value!r} documented"
    return ""


def _lookup(owners, name):
    """``(object, namespace for its defaults)`` that ``name`` (``attr``, or ``module.attr`` of
    a section's module, or a package reference) names in a section of ``owners``, or
    ``(None, None)``."""
    if "." in name:
        head, attribute = name.rsplit(".", 1)
        if package_reference(name):
            owners = [resolve(head)]
        else:
            owners = [o for o in owners if getattr(o, "__name__", "").split(".")[-1] == head]
        name = attribute
    for owner in owners:
        if hasattr(owner, name):
            module = owner if inspect.ismodule(owner) else sys.modules[owner.__module__]
            return getattr(owner, name), vars(module)
        if getattr(owner, "__name__", None) == name:  # the section's class itself
            return owner, vars(sys.modules[owner.__module__])
    return None, None


def api_calls():
    """``(id, owners, span, signature or example)`` of every call form in a package section
    of docs/api.md."""
    calls = []
    for heading, owners, spans in api_sections():
        seen = set()
        for span in spans:
            match = _CALL.match(span)
            name = match and match["name"]
            head = name and name.rsplit(".", 1)[0]
            if name and ("." not in name and owners or package_reference(name) or any(
                    getattr(o, "__name__", "").split(".")[-1] == head for o in owners)):
                calls.append((f"{heading}:{name}", owners, span, name not in seen))
                seen.add(name)
    return calls


@pytest.mark.parametrize("where, owners, span, signature", api_calls(),
                         ids=[c[0] for c in api_calls()])
def test_api_signature_is_the_code(where, owners, span, signature):
    match = _CALL.match(span)
    name, args = match["name"], match["args"]
    obj, namespace = _lookup(owners, name)
    if obj is None:
        assert name in OTHER_CALLS, f"docs/api.md ({where}) documents {span}, which " \
            f"{[getattr(o, '__name__', o) for o in owners]} lacks"
        return
    try:  # (an elided list, or a call with values: only the name is checked)
        ast.parse(f"def f({args}): pass")
    except SyntaxError:
        return
    if not signature:
        return
    if inspect.isclass(obj):
        obj = obj.__init__
    drift = signature_drift(obj, args, namespace)
    assert not drift, f"docs/api.md ({where}) documents {span}: {drift}"


def references():
    """``(page, dotted name)`` of every package name the pages mention."""
    found = set()
    for page in PAGES:
        for span in code_spans(page.read_text()):
            name = package_reference(span)
            if name:
                found.add((page.relative_to(ROOT).as_posix(), name))
    return sorted(found)


@pytest.mark.parametrize("page, name", references(), ids=[f"{p}:{n}" for p, n in references()])
def test_documented_name_exists(page, name):
    try:
        resolve(name)
    except LookupError as missing:
        pytest.fail(f"{page} mentions {name}: {missing}")


def test_momentum_calls_take_documented_keywords():
    accepted = set(inspect.signature(paddle_momentum.Momentum).parameters) | {
        setting.name for setting in paddle_momentum._declarations.RULE_SETTINGS}
    unknown = []
    for page in PAGES:
        text = page.read_text()
        for keywords in re.findall(r"\bMomentum\(([^()]*(?:\([^()]*\)[^()]*)*)\)", text):
            for keyword in re.findall(r"(?:^|[,(]\s*)([a-z_]\w*)\s*=(?!=)", keywords):
                if keyword not in accepted:
                    unknown.append(f"{page.name}: Momentum(... {keyword}= ...)")
    assert not unknown, unknown


@functools.lru_cache(maxsize=None)
def command_help(command):
    done = subprocess.run([sys.executable, "-m", "paddle_momentum", command, "--help"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def command_options():
    """``(page, command, --option)`` of every ``python -m paddle_momentum`` line."""
    found = set()
    for page in PAGES:
        for command, rest in re.findall(r"python -m paddle_momentum (\w+)([^`\n]*)",
                                        page.read_text()):
            for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest):
                found.add((page.relative_to(ROOT).as_posix(), command, option))
    return sorted(found)


@pytest.mark.parametrize("page, command, option", command_options(),
                         ids=[f"{p}:{c}{o}" for p, c, o in command_options()])
def test_documented_command_option_exists(page, command, option):
    assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", command_help(command)), \
        f"{page}: `python -m paddle_momentum {command} {option}` is not an option of {command}"


def test_readme_signature_is_the_builtins():
    import paddle

    match = re.search(r"The signature is the built-in's[^`]*`Momentum\((.*?)\)`",
                      (ROOT / "README.md").read_text(), re.S)
    assert match, "README no longer states the built-in's signature"
    drift = signature_drift(paddle.optimizer.Momentum.__init__, " ".join(match[1].split()), {})
    assert not drift, f"README's signature is not the built-in's: {drift}"


def test_api_argument_table_is_momentums_arguments():
    """docs/api.md's table of ``Momentum``'s arguments has a row for each argument it takes
    (its keyword-only rule settings included) and no other."""
    section = API.read_text().split("## `paddle_momentum.Momentum`", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `(\w+)`", section, flags=re.M))
    parameters = inspect.signature(paddle_momentum.Momentum).parameters.values()
    arguments = {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD} | {
        setting.name for setting in paddle_momentum._declarations.RULE_SETTINGS}
    assert rows == arguments, (f"documented only: {sorted(rows - arguments)}, "
                               f"undocumented: {sorted(arguments - rows)}")


def recorded_blocks(page):
    """``{name: [lines]}`` of a page's ``<!-- bench:name -->`` blocks (pasted bench output)."""
    return {name: block.strip().splitlines() for name, block in re.findall(
        r"<!-- bench:(\w+) -->\n(.*?)<!-- /bench:\1 -->", page.read_text(), re.S)}


def test_figures_come_from_one_recorded_run():
    """docs/performance.md's tables are pasted `bench --markdown` output, each beginning with
    the line that says when, where and by which command it was made; README's table is rows
    of the main one, from the same run (the same line, the same header, rows equal)."""
    performance = recorded_blocks(ROOT / "docs" / "performance.md")
    assert {"main", "sizes", "rules"} <= set(performance), sorted(performance)
    for name, lines in performance.items():
        assert re.match(r"Measured \d{4}-\d\d-\d\d \d\d:\d\d UTC on \d+ CPU cores.*, Paddle "
                        r"\S+, paddle_momentum \S+ \(.*\): `python -m paddle_momentum bench "
                        r"[^`]*--markdown[^`]*`$", lines[0]), f"performance.md {name}: {lines[0]}"
    readme = recorded_blocks(ROOT / "README.md")["readme"]
    main = performance["main"]
    assert readme[0] == main[0], "README's figures are not from performance.md's run"
    table = [line for line in readme[1:] if line.startswith("|")]
    assert table[:2] == [line for line in main if line.startswith("|")][:2]
    assert len(table) > 2 and set(table[2:]) <= set(main), \
        f"README rows not in performance.md's run: {sorted(set(table[2:]) - set(main))}"


def test_each_departure_names_tests_that_exist():
    """Every row of docs/differences.md's tables names its tests in its last cell (test
    functions, or the ids of test_errors.py's matrix, which checks them), and every test named
    on a page as ``file::test`` exists (a function of that name in that file)."""
    text = (ROOT / "docs" / "differences.md").read_text()
    untested = [row[:80] for row in re.findall(r"^\|(?!---)(.*)\|$", text, flags=re.M)
                if row.rsplit("|", 1)[-1].strip() in ("", "—", "-")]  # (its last cell)
    assert not untested, f"differences.md rows without a test: {untested}"
    missing = []
    for page in PAGES:
        for file, name in re.findall(r"`?(test_\w+\.py)::(test_\w+)", page.read_text()):
            path = ROOT / "tests" / file
            defined = path.exists() and re.search(rf"^def {name}\(", path.read_text(), re.M)
            if not defined:
                missing.append(f"{page.name}: {file}::{name}")
    assert not missing, missing
