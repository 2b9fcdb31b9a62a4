"""The documentation agrees with the code: README.md and docs/**/*.md.

* Every relative link (and image) points to an existing file, and every ``#anchor`` to a heading.
* README.md is at most 200 lines, and every page under docs/ is linked from README.md or from
  docs/experiments/README.md; every experiment record is dated and names its commit.
* Every ``--flag`` of a command in the manual (README.md, docs/*.md; not the dated experiment
  records) exists in the script it follows.
* Tables of code constants are checked against the code, so a number in the docs cannot drift:

  - ``| constant | value | ... |`` tables: each row's `` `module.NAME` `` (or
    `` `module.Class.field` ``) has the Python literal of its value column;
  - ``| `script.py` flag | default | ... |`` tables: a default written as one backticked Python
    literal equals the default of that ``add_argument`` (in the script or a simulation_code module
    it imports); other default cells are prose and not checked;
  - named tables (joints, cameras, env ids, reward terms, seed ranges, SmolVLA frame constants,
    per-model ReinFlow settings) are compared row by row with their constants.

Values are read from the source with ``ast`` (module-level assignments, class fields, argparse
defaults), falling back to importing the module, so this test imports neither torch nor mujoco and
takes well under a second.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import math
import re
import shlex
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SIM = REPO / "simulation_code"
PACKAGE = "so101_sim"  # simulation_code/ installed as this package (pyproject.toml)
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
MAX_README_LINES = 200


# ---------------------------------------------------------------------- markdown
def strip_code(text: str) -> str:
    """``text`` without fenced code blocks (their lines kept empty, so line numbers stay)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else line)
    return "\n".join(out)


def split_row(line: str) -> list[str]:
    """Cells of a markdown table row; ``\\|`` is a literal bar inside a cell."""
    cells = re.split(r"(?<!\\)\|", line.strip())
    return [c.strip().replace("\\|", "|") for c in cells[1:-1]]


def tables(path: Path) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every markdown table of ``path`` (outside code blocks)."""
    found, block = [], []
    for line in [*strip_code(path.read_text()).splitlines(), ""]:
        if line.lstrip().startswith("|"):
            block.append(line)
            continue
        if len(block) >= 2 and re.fullmatch(r"[\s|:-]+", block[1]):
            found.append((split_row(block[0]), [split_row(r) for r in block[2:]]))
        block = []
    return found


def all_tables():
    return [(p, h, rows) for p in PAGES for h, rows in tables(p)]


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def only_ticked(cell: str) -> str | None:
    """The content of a cell that is exactly one backticked span, else None."""
    m = re.fullmatch(r"`([^`]*)`", cell.strip())
    return m.group(1) if m else None


def literal(text: str):
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False, None


def numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", cell)]


def named_table(first_cells: list[str]) -> list[tuple[Path, list[list[str]]]]:
    """Every table whose header starts with ``first_cells``; at least one must exist."""
    hits = [(p, rows) for p, h, rows in all_tables() if h[: len(first_cells)] == first_cells]
    assert hits, f"no docs table with header {first_cells}: renamed? (tests/test_docs.py checks it)"
    return hits


def slug(heading: str, seen: dict[str, int]) -> str:
    """GitHub's anchor of a heading (lower case, punctuation dropped, spaces -> '-', -N for repeats)."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
    n = seen.get(s, 0)
    seen[s] = n + 1
    return s if n == 0 else f"{s}-{n}"


@cache
def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    return {slug(m.group(1), seen) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", strip_code(path.read_text()), re.M)}


# ---------------------------------------------------------------------- code values, read statically
SAFE_BUILTINS = {n: getattr(builtins, n)
                 for n in ("int", "float", "str", "bool", "tuple", "list", "dict", "set", "frozenset", "len", "range",
                           "min", "max", "abs", "round", "sorted", "sum", "zip", "enumerate", "reversed")}
DEBUG_IMPORTS = False
NON_SIM = {"np": np, "numpy": np, "math": math, "Path": Path}


def module_file(name: str) -> Path:
    """simulation_code/NAME.py, simulation_code/NAME/__init__.py or benchmarks/NAME.py."""
    for p in (SIM / f"{name}.py", SIM / name / "__init__.py", REPO / "benchmarks" / f"{name}.py"):
        if p.exists():
            return p
    return SIM / f"{name}.py"


def is_sim_module(name: str) -> bool:
    return module_file(name).exists()


def import_name(module: str) -> str:
    """The importable name of a simulation_code/ module (the installed package so101_sim) or a benchmark."""
    return f"{PACKAGE}.{module}" if (SIM / f"{module}.py").exists() or (SIM / module).is_dir() else module


@cache
def module_tree(name: str) -> ast.Module:
    return ast.parse(module_file(name).read_text(), filename=str(module_file(name)))


@cache
def import_aliases(name: str) -> dict[str, tuple[str, str | None]]:
    """Top-level imports of a module: local name -> (module, attribute or None)."""
    out: dict[str, tuple[str, str | None]] = {}
    for node in module_tree(name).body:
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = (a.name, None)
        elif isinstance(node, ast.ImportFrom) and node.module == PACKAGE:  # from so101_sim import m [as x]
            for a in node.names:
                out[a.asname or a.name] = (a.name, None)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            module = node.module.removeprefix(PACKAGE + ".")  # from so101_sim.m import y: module m
            for a in node.names:
                out[a.asname or a.name] = (module, a.name)
    return out


class StaticModule:
    """Attribute access = the module-level value, read from the source."""

    def __init__(self, module: str):
        self.module = module

    def __getattr__(self, attr: str):
        return static_value(self.module, attr)


class StaticClass:
    """A class of a module: attributes = its field defaults (dataclass-style), read from the source."""

    def __init__(self, module: str, node: ast.ClassDef):
        self.module, self.node = module, node

    def __call__(self):  # ``d = ReinFlowConfig()``: an instance with the defaults
        return self

    def __getattr__(self, attr: str):
        for stmt in self.node.body:
            target = stmt.target if isinstance(stmt, ast.AnnAssign) else (
                stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else None)
            if isinstance(target, ast.Name) and target.id == attr and stmt.value is not None:
                return evaluate(self.module, stmt.value)
        raise AttributeError(f"{self.module}.{self.node.name} has no field {attr!r} with a default")


class Namespace(dict):
    """Names of one module for ``eval``: its module-level values, its imports, numpy/Path."""

    def __init__(self, module: str, extra: dict | None = None):
        super().__init__(extra or {})
        self.module = module

    def __missing__(self, key: str):
        if key == "__file__":
            return str(module_file(self.module))
        if key in SAFE_BUILTINS:
            return SAFE_BUILTINS[key]
        if key in NON_SIM:
            return NON_SIM[key]
        alias = import_aliases(self.module).get(key)
        if alias is not None:
            mod, attr = alias
            if mod in NON_SIM and attr is None:
                return NON_SIM[mod]
            if mod == "pathlib" and attr == "Path":
                return Path
            if is_sim_module(mod):
                return StaticModule(mod) if attr is None else static_value(mod, attr)
            return getattr(importlib.import_module(mod), attr) if attr else importlib.import_module(mod)
        return static_value(self.module, key)


def evaluate(module: str, node: ast.expr, extra: dict | None = None):
    code = compile(ast.Expression(node), str(module_file(module)), "eval")
    return eval(code, {"__builtins__": SAFE_BUILTINS}, Namespace(module, extra))  # noqa: S307  (our own source)


def static_value(module: str, name: str):
    """The value of ``module.name``: its last top-level assignment evaluated from the source (a class
    gives a :class:`StaticClass`); if that fails, the imported module's attribute."""
    found = None
    for node in module_tree(module).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            found = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            found = node.value
        elif isinstance(node, ast.ClassDef) and node.name == name:
            return StaticClass(module, node)
    if name in import_aliases(module):
        return Namespace(module)[name]
    if found is None:
        raise NameError(f"simulation_code/{module}: no module-level {name}")
    try:
        return evaluate(module, found)
    except Exception as e:  # noqa: BLE001  (computed at import time: import the module)
        if DEBUG_IMPORTS:
            print(f"test_docs: importing {module} for {name}: {e!r}")
    return getattr(importlib.import_module(import_name(module)), name)


def code_value(ref: str):
    """``module.NAME`` or ``module.Class.field`` -> its value."""
    module, *attrs = ref.split(".")
    assert is_sim_module(module), f"{ref}: no module simulation_code/{module}.py"
    value = static_value(module, attrs[0])
    for a in attrs[1:]:
        value = getattr(value, a)
    return value


@cache
def argparse_defaults(script: str) -> tuple[set[str], dict[str, object]]:
    """(every ``--flag`` of an ``add_argument`` in simulation_code/``script`` and the simulation_code
    modules it imports, ``--flag`` -> the value of its ``default=``; the script's own definitions win)."""
    module = script.removesuffix(".py")
    defined: set[str] = set()
    out: dict[str, object] = {}
    imported = [m for m, _ in import_aliases(module).values() if is_sim_module(m)]
    for mod in [*imported, module]:
        tree = module_tree(mod)
        # locals like ``d = ReinFlowConfig()`` that defaults refer to
        local = {}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                    and not node.value.args and not node.value.keywords):
                try:
                    cls = Namespace(mod)[node.value.func.id]
                except Exception:  # noqa: BLE001
                    continue
                if isinstance(cls, StaticClass):
                    local[node.targets[0].id] = cls
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"):
                continue
            flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            kw = {k.arg: k.value for k in node.keywords}
            defined.update(flags)
            if "default" not in kw:
                continue
            try:
                value = evaluate(mod, kw["default"], local)
            except Exception as e:  # noqa: BLE001
                value = e
            for f in flags:
                out[f] = value
    return defined, out


def rel(p: Path) -> str:
    p = Path(p)
    return str(p.relative_to(REPO)) if p.is_absolute() and p.is_relative_to(REPO) else str(p)


def same(expected, doc) -> bool:
    """A documented literal ``doc`` equals the code's ``expected`` (arrays, tuples and lists alike)."""
    if isinstance(expected, Path):
        return isinstance(doc, str) and rel(expected) == doc
    if isinstance(expected, np.ndarray):
        return np.asarray(doc, float).shape == expected.shape and np.allclose(np.asarray(doc, float), expected, rtol=0, atol=1e-12)
    if isinstance(expected, dict):
        return isinstance(doc, dict) and expected.keys() == doc.keys() and all(same(expected[k], doc[k]) for k in expected)
    if isinstance(expected, (list, tuple)):
        return isinstance(doc, (list, tuple)) and len(doc) == len(expected) and all(map(same, expected, doc))
    if isinstance(expected, bool) or isinstance(doc, bool) or expected is None or isinstance(expected, str):
        return type(expected) is type(doc) and expected == doc
    if isinstance(expected, (int, float, np.integer, np.floating)):
        return isinstance(doc, (int, float)) and math.isclose(float(expected), float(doc), rel_tol=1e-12, abs_tol=1e-15)
    return expected == doc


# ---------------------------------------------------------------------- pages and links
def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}): move details to docs/"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: rel(p))
def test_relative_links_resolve(page):
    text = re.sub(r"`[^`\n]*`", "", strip_code(page.read_text()))
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: {rel(dest)} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {rel(dest)}")
    assert not bad, f"{rel(page)}: broken links:\n  " + "\n  ".join(bad)


def test_every_docs_page_is_linked():
    linked = set()
    for page in (README, DOCS / "experiments" / "README.md"):
        for target in LINK.findall(strip_code(page.read_text())):
            path = target.partition("#")[0]
            if path and not re.match(r"[a-z][a-z0-9+.-]*:", path):
                dest = (page.parent / path).resolve()
                linked.add(dest / "README.md" if dest.is_dir() else dest)
    orphans = [rel(p) for p in DOCS.rglob("*.md") if p.resolve() not in linked]
    assert not orphans, f"docs pages linked from neither README.md nor docs/experiments/README.md: {orphans}"


def test_experiment_records_are_dated_and_name_their_commit():
    records = sorted((DOCS / "experiments").glob("*.md"))
    assert len(records) > 1
    for p in records:
        if p.name == "README.md":
            continue
        assert re.match(r"\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.md$", p.name), f"{p.name}: name it YYYY-MM-DD-topic.md"
        assert re.search(r"commit [0-9a-f]{7,40}", p.read_text()), f"{rel(p)}: say which commit produced the result"


def commands(page: Path) -> list[str]:
    """Shell commands of a page: code-block lines (``\\`` continuations joined) and inline code."""
    text = page.read_text()
    out, fenced, buf = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            buf += line.rstrip().removesuffix("\\") + " "
            if not line.rstrip().endswith("\\"):
                out.append(buf)
                buf = ""
    out += re.findall(r"`([^`\n]+)`", strip_code(text))
    return out


@pytest.mark.parametrize("page", [p for p in PAGES if "experiments" not in p.parts], ids=lambda p: rel(p))
def test_commands_use_existing_flags(page):
    """Every ``--flag`` after ``SCRIPT.py`` in a command exists in that script (or the modules whose
    arguments it adds). Experiment records are history and keep the flags of their commit."""
    bad = []
    for cmd in commands(page):
        try:
            tokens = shlex.split(cmd.split(" #")[0])
        except ValueError:
            tokens = cmd.split()
        script = None
        for tok in tokens:
            if tok in ("&&", ";", "|", "||"):
                script = None
            elif re.fullmatch(r"(?:\S*/)?\w+\.py", tok) and module_file(Path(tok).stem).exists():
                script = Path(tok).stem
            elif script and tok.startswith("--"):
                flag = tok.split("=", 1)[0]
                defined = argparse_defaults(script + ".py")[0]
                if flag not in {*defined, "--help"} and not (flag.startswith("--no-") and "--" + flag[5:] in defined):
                    bad.append(f"{script}.py {flag}  (in: {cmd.strip()[:100]})")
    assert not bad, f"{rel(page)}: flags the scripts do not define:\n  " + "\n  ".join(bad)


# ---------------------------------------------------------------------- generic tables
def constant_rows():
    for p, h, rows in all_tables():
        if h[:2] == ["constant", "value"]:
            for r in rows:
                yield pytest.param(p, r, id=f"{p.name}:{r[0].strip('`')}")


@pytest.mark.parametrize("page,row", list(constant_rows()))
def test_constant_tables_match_the_code(page, row):
    ref, value = only_ticked(row[0]), only_ticked(row[1])
    assert ref and value is not None, f"{rel(page)}: constant tables need `module.NAME` | `literal` cells: {row}"
    ok, doc = literal(value)
    assert ok, f"{rel(page)}: {value!r} is not a Python literal"
    expected = code_value(ref)
    assert same(expected, doc), f"{rel(page)}: {ref} is {expected!r} in the code, the docs say {value}"


def flag_rows():
    for p, h, rows in all_tables():
        script = ticked(h[0])
        if len(h) >= 2 and h[1] == "default" and h[0].endswith("flag") and script and script[0].endswith(".py"):
            for r in rows:
                yield pytest.param(p, script[0], r, id=f"{p.name}:{script[0]}:{r[0].split()[0].strip('`')}")


@pytest.mark.parametrize("page,script,row", list(flag_rows()))
def test_flag_defaults_match_the_code(page, script, row):
    flag = next((t for s in ticked(row[0]) for t in s.split() if t.startswith("--")), None)
    assert flag, f"{rel(page)}: no --flag in {row[0]!r}"
    defined, defaults = argparse_defaults(script)
    assert flag in defined, f"{rel(page)}: {script} has no {flag}"
    value = only_ticked(row[1])
    ok, doc = literal(value) if value is not None else (False, None)
    if not ok:
        return  # prose default ("off", "the checkpoint's", a path pattern): not checked
    assert flag in defaults, f"{rel(page)}: {script} defines no default for {flag}"
    expected = defaults[flag]
    assert not isinstance(expected, Exception), f"{script} {flag}: could not read its default ({expected!r})"
    assert same(expected, doc), f"{rel(page)}: {script} {flag} defaults to {expected!r}, the docs say {value}"


# ---------------------------------------------------------------------- named tables
def test_joint_table():
    names, limits, home = (code_value(f"so101_mujoco_utils.{n}") for n in ("JOINT_NAMES", "JOINT_LIMITS_RAD", "HOME_POSE_LEROBOT"))
    for page, rows in named_table(["joint", "lower (rad)", "upper (rad)"]):
        assert [only_ticked(r[0]) for r in rows] == list(names), rel(page)
        for i, r in enumerate(rows):
            assert numbers(r[1])[0] == pytest.approx(limits[0, i], abs=1e-12), (rel(page), r)
            assert numbers(r[2])[0] == pytest.approx(limits[1, i], abs=1e-12), (rel(page), r)
            assert numbers(r[3])[0] == pytest.approx(home[i], abs=1e-12), (rel(page), r)


def test_smolvla_frame_table():
    names = code_value("so101_mujoco_utils.JOINT_NAMES")
    for page, rows in named_table(["joint", "`MUJOCO_TO_PHYSICAL_OFFSET` (deg)"]):
        header = next(h for p, h, _ in all_tables() if p == page and h[:2] == ["joint", "`MUJOCO_TO_PHYSICAL_OFFSET` (deg)"])
        assert [only_ticked(r[0]) for r in rows] == list(names), rel(page)
        for col, title in enumerate(header[1:], start=1):
            arr = code_value("so101_mujoco_utils." + ticked(title)[0])
            assert [numbers(r[col])[0] for r in rows] == pytest.approx(list(arr), abs=1e-12), (rel(page), title)


def test_camera_table():
    cameras = code_value("so101_mujoco_utils.CAMERAS")
    prefix = code_value("so101_mujoco_utils.OBS_IMAGE_PREFIX")
    scene = {c.get("name"): c for c in ET.parse(REPO / "model" / "scene.xml").iter("camera")}
    for page, rows in named_table(["key", "MuJoCo name", "observation key"]):
        assert sorted(only_ticked(r[0]) for r in rows) == sorted(cameras), rel(page)
        for r in rows:
            key, name = only_ticked(r[0]), only_ticked(r[1])
            assert cameras[key] == name and only_ticked(r[2]) == prefix + key, (rel(page), r)
            if name in scene:
                pos, fovy = [float(x) for x in scene[name].get("pos").split()], float(scene[name].get("fovy"))
            else:  # added to the robot by build_scene_spec
                pos, fovy = list(code_value("so101_mujoco_utils.WRIST_CAMERA_POS")), code_value("so101_mujoco_utils.WRIST_CAMERA_FOVY")
            assert numbers(r[3])[:3] == pytest.approx(pos, abs=1e-12), (rel(page), r)
            assert numbers(r[4])[0] == pytest.approx(fovy, abs=1e-12), (rel(page), r)


def test_env_id_table():
    steps = code_value("registration.MAX_EPISODE_STEPS")
    kwargs = code_value("registration.ENV_KWARGS")
    hz = code_value("so101_mujoco_utils.CONTROL_HZ")
    for page, rows in named_table(["id", "block", "render_mode", "max_episode_steps"]):
        assert sorted(only_ticked(r[0]) for r in rows) == sorted(steps), rel(page)
        for r in rows:
            env_id = only_ticked(r[0])
            assert r[1].split()[0] == ("random" if kwargs[env_id].get("randomize_block") else "fixed"), (rel(page), r)
            mode = kwargs[env_id].get("render_mode")
            assert (r[2].split()[0] == "None") if mode is None else (ticked(r[2])[0] == repr(mode).replace("'", '"')), (rel(page), r)
            n, *secs = numbers(r[3])
            assert n == steps[env_id] and (not secs or secs[0] == pytest.approx(steps[env_id] / hz)), (rel(page), r)


def test_reward_table():
    weights = code_value("so101_mujoco_utils.REWARD_WEIGHTS")
    for page, rows in named_table(["term", "weight"]):
        assert [only_ticked(r[0]) for r in rows] == list(code_value("so101_mujoco_utils.REWARD_TERMS")), rel(page)
        for r in rows:
            assert float(r[1]) == weights[only_ticked(r[0])], (rel(page), r)


def test_seed_range_table():
    ranges = code_value("so101_mujoco_utils.SEED_RANGES")
    for page, rows in named_table(["use", "first", "stop"]):
        assert sorted(only_ticked(r[0]) for r in rows) == sorted(ranges), rel(page)
        for r in rows:
            assert (int(r[1]), int(r[2])) == tuple(ranges[only_ticked(r[0])]), (rel(page), r)


def test_reinflow_settings_table():
    vla = code_value("reinflow_vla.VLA_SETTINGS")
    flow = code_value("train_reinflow.FLOW_SETTINGS")
    engine = code_value("reinflow_engine.ReinFlowConfig")

    def shown(value) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        return rel(value) if isinstance(value, Path) else str(value)

    def matches(cell: str, value) -> bool:
        text = cell.replace("`", "").split()[0]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isclose(float(text), float(value), rel_tol=1e-12)
        return text == shown(value)

    for page, rows in named_table(["setting", "key", "flow", "SmolVLA", "Pi0"]):
        keys = [only_ticked(r[1]) for r in rows]
        assert set(vla["smolvla"]) <= set(keys), f"{rel(page)}: missing {set(vla['smolvla']) - set(keys)}"
        for key, r in zip(keys, rows):
            expected = (flow[key] if key in flow else getattr(engine, key), vla["smolvla"][key], vla["pi0"][key])
            for cell, value, who in zip(r[2:5], expected, ("flow", "smolvla", "pi0")):
                assert matches(cell, value), f"{rel(page)}: {who} {key} is {value!r} in the code, the docs say {cell!r}"
