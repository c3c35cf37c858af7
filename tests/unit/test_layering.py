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
