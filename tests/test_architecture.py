"""The package's shape: no import cycles (imports inside functions included), a bottom layer
that imports nothing of byol, data readers that know nothing of the algorithm, and a
docstring at the top of every module saying what it is for."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "src" / "byol"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every byol module ``path`` imports, at any depth of the file (functions included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.startswith("byol"):
                found.add(target)
                # "from . import x" / "from .pkg import module" may name submodules
                for alias in node.names:
                    candidate = f"{target}.{alias.name}"
                    if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").is_file() or \
                            (PACKAGE.parent / candidate.replace(".", "/") / "__init__.py").is_file():
                        found.add(candidate)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("byol"))
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_even_through_imports_inside_functions():
    edges = graph()
    assert find_cycle(edges) is None, find_cycle(edges)


# The packages from the bottom up: each imports only packages below it (or itself); those on one
# floor know nothing of each other.  The data flow reads upwards: data → views → models →
# training → evaluation of the result, with the shared pieces (run directory, optimizer,
# settings) below every stage that uses them.
FLOORS = {"base": 0, "data": 1, "views": 1, "optim": 1, "models": 1, "settings": 2, "evaluation": 3, "training": 4,
          "commands": 5}


def package_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def test_every_package_imports_only_packages_below_it():
    for name, targets in graph().items():
        if name in ("byol", "byol.__main__"):
            continue  # the public face and the entry point
        for target in targets:
            if target == "byol":
                raise AssertionError(f"{name} imports the package's face")
            mine, theirs = package_of(name), package_of(target)
            assert mine == theirs or FLOORS[mine] > FLOORS[theirs], f"{name} -> {target}"


def test_the_top_level_holds_packages_alone_and_every_package_is_on_a_floor():
    top = {p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "_")) or p.name in ("__init__.py", "__main__.py")}
    assert {p for p in top if p.endswith(".py")} == {"__init__.py", "__main__.py"}
    assert {p for p in top if (PACKAGE / p).is_dir()} == set(FLOORS)


def test_no_module_over_400_lines_and_no_function_over_60_in_the_training_and_evaluation_paths():
    for path in PACKAGE.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path
    for folder in ("training", "evaluation", "views", "models", "optim"):
        for path in (PACKAGE / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    assert node.end_lineno - node.lineno + 1 <= 60, f"{path}:{node.name}"


def test_the_bottom_layer_and_the_readers_import_nothing_above_them():
    edges = graph()
    assert edges["byol.base.errors"] == set()
    assert edges["byol.base.device"] <= {"byol.base.errors"}
    assert edges["byol.base.rundir"] <= {"byol.base.errors"}
    for name, targets in edges.items():
        if name.startswith("byol.data"):
            assert all(t.startswith("byol.data") or t == "byol.base.errors" for t in targets), (name, targets)


def test_every_module_says_what_it_is_for():
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and len(docstring.split()) >= 5, path
