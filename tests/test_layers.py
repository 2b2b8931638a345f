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


def top_level_imports(path: Path) -> set[str]:
    """What a file imports when it is imported (module level, ``if TYPE_CHECKING`` blocks excluded)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``edges`` as a path ``a -> ... -> a``, or ``None``."""
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                loop = [*path, m]
                return [*loop[loop.index(n):], n]
            if n not in state and (found := visit(n, [*path, m])):
                return found
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m, [])):
            return found
    return None


def without_package_links(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` importing its own submodules to register them is not a circle."""
    return {m: {i for i in s if not m.startswith(i + ".") and not i.startswith(m + ".")} for m, s in g.items()}


def test_no_import_circle_even_through_imports_inside_functions() -> None:
    """Imports between taskcodec modules form no circle, counting the ones deferred into functions: a
    deferred import that closes a circle hides a lower module reaching back up."""
    g, _ = graph()
    circle = find_circle(without_package_links(g))
    assert circle is None, f"import circle: {' -> '.join(circle)}"


def test_the_torch_free_client_reaches_no_module_that_imports_torch() -> None:
    """No back arrow under the client: the modules ``taskcodec.client`` uses, and every taskcodec module
    they import even inside a function, import no torch-bound library when they are imported."""
    g, files = graph()
    reached, todo = set(), [m for m in files if m.startswith("taskcodec.client")]
    while todo:
        m = todo.pop()
        if m not in reached:
            reached.add(m)
            todo += [i for i in g[m] if i in files]
    heavy = ("torch", "compressai", "timm")
    bad = sorted(m for m in reached if any(i.split(".")[0] in heavy for i in top_level_imports(files[m])))
    assert not bad, f"the torch-free client reaches modules that import torch: {bad}"


def test_modules_stay_small() -> None:
    big = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450}
    assert not big, f"split these modules (over 450 lines): {big}"
