"""The import graph: `taskcodec/` is plain PyTorch (no Lightning, Hydra or datamodules), has no import
circle, and keeps its modules small enough to read in one go."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "taskcodec"
UPPER = ("lightning_modules", "datamodules", "pytorch_lightning", "lightning", "hydra", "omegaconf", "train", "evaluate")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions (absolute names)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in imports(p) if i in files and i != m} for m, p in files.items()}, files


def test_taskcodec_never_imports_a_layer_above() -> None:
    _, files = graph()
    bad = sorted((m, i) for m, p in files.items() for i in imports(p)
                 if i.split(".")[0] in UPPER)  # fmt: skip
    assert not bad, f"taskcodec/ must stay plain PyTorch: {bad}"


def test_no_import_circle_at_module_level() -> None:
    """Module-level imports between taskcodec modules form no cycle (a package's __init__ importing its
    own submodules to register them is not a circle)."""
    g, files = graph()
    top = {}
    for m, p in files.items():
        names = set()
        for node in ast.parse(p.read_text()).body:  # module level only: lazy imports break no circle
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
        top[m] = {i for i in names if i in files and i != m and not m.startswith(i + ".") and not i.startswith(m + ".")}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in top[m]:
            assert state.get(n) != 1, f"import circle: {' -> '.join([*path, m, n])}"
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in top:
        if m not in state:
            visit(m, [])


def test_modules_stay_small() -> None:
    big = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert not big, f"split these modules (over 450 lines): {big}"
