"""Shape rules of the code (issue: redesign for the next engineer): no function in simulation_code/
longer than 80 lines unless its docstring says why ("Long because ..."), and a training main that
reads top to bottom with no per-model branches."""

import ast

from conftest import SIM_DIR

MAX_LINES = 80


def _functions(path):
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_function_is_longer_than_80_lines_without_a_stated_reason():
    long = [f"{p.name}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
            for p in sorted(SIM_DIR.glob("**/*.py")) for f in _functions(p)
            if f.end_lineno - f.lineno + 1 > MAX_LINES and "Long because" not in (ast.get_docstring(f) or "")]
    assert not long, long


def test_the_training_main_reads_top_to_bottom_without_model_type_branches():
    main = next(f for f in _functions(SIM_DIR / "train_reinflow.py") if f.name == "main")
    assert main.end_lineno - main.lineno + 1 <= 60
    loop = [f for f in _functions(SIM_DIR / "train_reinflow.py")
            if f.name in ("main", "setup_run", "rollout", "advantages", "iteration_row", "log_eval_save", "save", "evaluate")]
    branches = [f"{f.name}:{n.lineno}" for f in loop for n in ast.walk(f) if isinstance(n, ast.Compare)
                and "model_type" in ast.unparse(n)]
    assert not branches, branches  # model-specific behaviour lives in reinflow_backends.py


def test_modules_import_each_other_through_the_package():
    """``import so101_mujoco_utils`` (a bare name) would load a second copy of a module next to
    ``so101_sim.so101_mujoco_utils``: every import of a simulation_code/ module names the package."""
    ours = {p.stem for p in SIM_DIR.glob("*.py")} | {"envs"}
    bad = []
    files = [*SIM_DIR.glob("*.py"), *SIM_DIR.glob("*/*.py"), *(SIM_DIR.parent / "tests").glob("*.py"), *(SIM_DIR.parent / "benchmarks").glob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            bad += [f"{path.relative_to(SIM_DIR.parent)}:{node.lineno} {n}" for n in names if n.split(".")[0] in ours]
    assert not bad, "import these through the package (from so101_sim import ...):\n  " + "\n  ".join(bad)
