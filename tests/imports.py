"""Which project modules a stage imports, directly or through other project modules."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Every module name path imports, anywhere (top level or inside functions); for
    `from a import b`, both a and a.b (b may be a module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def direct_imports(path: Path) -> set[Path]:
    """Project files imported anywhere in path."""
    return {
        file
        for name in imported_names(path)
        if name.split(".")[0] in PACKAGES and (file := module_file(name))
    }


def import_closure(path: Path) -> set[Path]:
    """path and every project file it reaches through imports."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(direct_imports(current))
    return seen
