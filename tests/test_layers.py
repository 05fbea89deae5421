"""The house's rules, checked on the source: layers go one way, the process contract is written
once, modules stay one job long.

Layers, bottom to top (a module may import its own layer or any below):

    0 contract      platform.contract, platform.strict
    1 settings      stacks.settings
    2 pure          platform.resources, platform.policies, platform.declarations, platform.cli (CLI plumbing)
    3 runtime       platform.runtime.* (boto3 side)
    4 registry      registry.*
    5 monitoring    monitoring.*
    6 pipeline      pipeline.*
    7 commands      every area's CLI module (registry.cli, monitoring.cli, monitoring.alerts_cli,
                    platform.runtime.local_cli, pipeline.cli, pipeline.*_cli)
    8 deploy        platform.components.*, stacks.program, stacks.config, stacks.__main__ (the
                    Pulumi side reads the pure builders below it as data)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO

AREAS = {"stacks": "stacks", "platform": "platform", "registry": "registry", "monitoring": "monitoring", "pipeline": "pipeline"}
COMMANDS = {"stagewise.registry.cli", "stagewise.monitoring.cli", "stagewise.monitoring.alerts_cli",
            "stagewise.platform.runtime.local_cli", "stagewise.pipeline.cli"}
DEPLOY = {"stagewise.stacks.program", "stagewise.stacks.config", "stagewise.stacks.__main__"}


def layer(module: str) -> int:
    """The layer of a ``stagewise.*`` module (see the module docstring)."""
    if module in ("stagewise.platform.contract", "stagewise.platform.strict"):
        return 0
    if module == "stagewise.stacks.settings" or module == "stagewise.stacks":
        return 1
    if module in ("stagewise.platform.resources", "stagewise.platform.policies", "stagewise.platform.declarations",
                  "stagewise.platform.cli"):
        return 2
    if module in COMMANDS or re.fullmatch(r"stagewise\.pipeline\.\w+_cli", module):
        return 7
    if module in DEPLOY or module.startswith("stagewise.platform.components"):
        return 8
    for prefix, n in (("stagewise.platform.runtime", 3), ("stagewise.registry", 4), ("stagewise.monitoring", 5),
                      ("stagewise.pipeline", 6)):
        if module == prefix or module.startswith(prefix + "."):
            return n
    raise AssertionError(f"{module} is in no layer: add it to tests/test_layers.py")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for area, folder in AREAS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append((".".join(["stagewise", area, *parts]), path))
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(module, line, inside a function)`` for each ``stagewise`` import of a file."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("stagewise"):
                if child.module in ("stagewise.pipeline", "stagewise.platform", "stagewise.registry", "stagewise.monitoring"):
                    found.extend((f"{child.module}.{a.name}", child.lineno, inside) for a in child.names)
                else:
                    found.append((child.module, child.lineno, inside))
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, inside) for a in child.names if a.name.startswith("stagewise"))
            visit(child, inside)

    visit(tree, False)
    return found


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_no_module_imports_up_the_layers(module, path):
    mine = layer(module)
    up = [(m, line) for m, line, _ in _imports(path) if layer(m) > mine]
    assert not up, f"{module} (layer {mine}) imports up: {up}"


def test_function_level_imports_only_defer_a_heavy_import_and_say_so():
    found = []
    for module, path in MODULES:
        lines = path.read_text().splitlines()
        for imported, line, inside in _imports(path):
            if inside and "deferred" not in lines[line - 1] and "deferred" not in lines[line - 2]:
                found.append(f"{path.relative_to(REPO)}:{line} {imported}")
    assert not found, "function-level imports without a reason:\n" + "\n".join(found)


def test_the_runtime_never_imports_pulumi_and_the_components_never_boto3():
    for module, path in MODULES:
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        if layer(module) < 8:
            assert not {"pulumi", "pulumi_aws", "pulumi_docker_build"} & names, module
        if module.startswith("stagewise.platform.components"):
            assert not {"boto3", "botocore"} & names, module


def _literals(path: Path) -> list[str]:
    """String constants of a file that are not docstrings."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_exit_codes_environment_names_and_task_errors_are_written_once():
    from stagewise.platform.contract import Env, TaskError

    names = [v for k, v in vars(Env).items() if k.isupper()] + [v for k, v in vars(TaskError).items() if k.isupper()]
    contract = REPO / "platform" / "contract.py"
    for _, path in MODULES:
        if path == contract:
            continue
        text = path.read_text()
        assert not re.search(r"^EXIT_\w+\s*=", text, re.M), f"{path}: an exit code defined outside the contract"
        for literal in _literals(path):
            hits = [n for n in names if n in literal]
            assert not hits, f"{path.relative_to(REPO)}: {hits} written outside platform/contract.py"


def test_no_module_is_over_600_lines():
    long = [f"{p.relative_to(REPO)} ({n} lines)" for _, p in MODULES if (n := len(p.read_text().splitlines())) > 600]
    assert not long, long
