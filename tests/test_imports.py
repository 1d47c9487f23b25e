"""No import circles in src/ or bench/: each module's imports (top-level and inside functions, as
the source says them) form a graph without cycles, so a new circle fails CI by name."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = ((ROOT / "src", ROOT / "src" / "wan_worker"), (ROOT, ROOT / "bench"))


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p, base): p for base, tree in TREES for p in sorted(tree.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (a package's __init__ counts only when named itself)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names]
            targets = [t for t in targets if t in known] or [module]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (depth-first, in name order)."""
    seen: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            cycle = path[path.index(node):] + [node]
            if not any(set(cycle) <= set(c) for c in out):
                out.append(cycle)
            return
        if node in seen:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, path + [node])
        seen.add(node)

    for start in sorted(graph):
        visit(start, [])
    return out


def test_no_module_imports_itself_through_others():
    mods = modules()
    graph = {name: imported(name, path, set(mods)) for name, path in mods.items()}
    assert len(mods) > 50 and graph["wan_worker.handler"] and graph["bench.__main__"]
    found = cycles(graph)
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
