"""The dependency rule that keeps the core pure, checked on the imports themselves (ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"domain", "handlers", "projections", "adapters", "config"}
ALLOWED = {
    "domain": {"domain"},
    "handlers": {"domain", "handlers"},
    "projections": {"domain", "handlers"},  # projections share the handler base class
    "config": {"config", "domain"},
}
IO_MODULES = {"nats", "alpaca", "aiosmtplib", "smtplib", "aiohttp", "requests", "socket",
              "urllib", "http", "subprocess", "asyncio", "random", "os", "exchange_calendars"}


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level module, line, inside `if TYPE_CHECKING:`) for every import."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                typing_only.add(id(sub))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], node.lineno, id(node) in typing_only)
                    for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module.split(".")[0], node.lineno, id(node) in typing_only))
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for mod, line, typing_only in imports(path):
            if mod in OURS and mod not in ALLOWED[layer] and not (
                typing_only and mod == "config"
            ):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("layer", ["domain", "handlers", "projections"])
def test_pure_core_does_no_io_and_reads_no_clock(layer: str) -> None:
    bad = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        for mod, line, _ in imports(path):
            if mod in IO_MODULES:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
        text = path.read_text()
        for needle in ("datetime.now(", "datetime.utcnow(", "time.time(", "date.today("):
            if needle in text:
                bad.append(f"{path.relative_to(ROOT)} calls {needle}")
    assert not bad, "\n".join(bad)


# --- inside adapters: roles, one-way arrows, no cycles ---------------------------------------

# cli/ and api/ -> audit/ -> runtime/ -> nats/, broker/, market_data/, alerts/ (DESIGN.md).
# A role imports its own package and lower ranks, never a higher one; the roles that touch
# the world (rank 0) may use each other (an adapter publishing to the log), cycles aside.
RANK = {"cli": 3, "api": 3, "audit": 2, "runtime": 1,
        "nats": 0, "broker": 0, "market_data": 0, "alerts": 0}
# Known and allowed: the CLI starts the API service. Known and NOT wanted, listed so it
# cannot grow unseen: the runtime hosts the API beside a run (`run --serve`) by importing it;
# the API should be handed to the runtime by the CLI instead.
ALLOWED_ARROWS = {("cli", "api")}
KNOWN_DEBT: set[tuple[str, str]] = set()


def our_modules() -> dict[str, Path]:
    mods = {}
    for top in OURS:
        for path in (ROOT / top).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def module_graph() -> dict[str, set[str]]:
    """Every import between our modules, function-level ones included (a lazy import is
    still a dependency); `if TYPE_CHECKING:` ones are not."""
    mods = our_modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(sub) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for sub in ast.walk(node)}
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                deps |= {r for a in node.names if (r := resolve(a.name))}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {r for a in node.names if (r := resolve(f"{node.module}.{a.name}"))}
        # A package's own modules importing the package (its __init__) is no cycle.
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def role(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "adapters" and len(parts) > 2 else None


def test_adapters_are_grouped_by_role() -> None:
    loose = sorted(p.name for p in (ROOT / "adapters").glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules outside a role package: {loose}"
    unknown = sorted(p.name for p in (ROOT / "adapters").iterdir()
                     if p.is_dir() and (p / "__init__.py").exists() and p.name not in RANK)
    assert not unknown, f"a role package the arrows do not place: {unknown}"


def test_adapter_arrows_point_one_way() -> None:
    bad = []
    for mod, deps in module_graph().items():
        src = role(mod)
        for dep in deps:
            dst = role(dep)
            if src not in RANK or dst not in RANK or src == dst:
                continue
            if (src, dst) in ALLOWED_ARROWS | KNOWN_DEBT:
                continue
            if RANK[dst] > RANK[src] or (RANK[dst] == RANK[src] and RANK[src] > 0):
                bad.append(f"{mod} ({src}) imports {dep} ({dst})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    graph = module_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
