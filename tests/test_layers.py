"""Who may import whom (docs/architecture.md, "Who may import whom"), checked on the source.

Every `import` of this repo's packages in `bot/`, `adapters/`, `actions/`, `knowledge/` and
`migrations/` is read with `ast` (imports inside functions and under TYPE_CHECKING included)
and checked against the table below; no module imports another module's private names, and
the engine's modules import no cycle among themselves (deferred imports count: a cycle broken
by an import inside a function is still two modules that need each other).
"""

from __future__ import annotations

import ast
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "adapters", "actions", "knowledge", "migrations")

#: The composition roots: the modules of `bot/` that wire concrete parts together (the
#: runtime and its build functions, the CLI that starts it, the server that mounts the
#: adapters' routes).
COMPOSITION_ROOTS = ("bot.runtime", "bot.assembly", "bot.cli", "bot.cli_*", "bot.server")

#: Engine modules no other package may import: the roots and the worker machinery they run.
ENGINE_ONLY = (*COMPOSITION_ROOTS, "bot.worker", "bot.http", "bot.httpguard")

#: Offline scripts that live beside the engine code they train or measure (run by hand, never
#: imported by the bot): they may read documents and embed them with `knowledge`.
OFFLINE_SCRIPTS = ("bot.guardrails.training", "bot.guardrails.passage_data",
                   "bot.guardrails.passage_training", "bot.guardrails.passage_eval",
                   "bot.guardrails.injection_data")

#: Shared adapter modules every platform may use; a platform never imports another's.
ADAPTER_SHARED = ("adapters", "adapters.base", "adapters.payload", "adapters.text",
                  "adapters.verification", "adapters.progress")

#: Known violations still to be removed (issue 14): each entry must still occur, so the list
#: only shrinks. (importer, imported)
KNOWN: set[tuple[str, str]] = {
    # outside a runtime the rails' models load their own MiniLM (inside one they are handed
    # the runtime's embedder)
    ("bot.guardrails.injection", "knowledge.embedders.onnx"),
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    names: tuple[str, ...]
    top_level: bool  # at module level, outside TYPE_CHECKING


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


ImportNode = ast.Import | ast.ImportFrom


def _walk(tree: ast.Module) -> Iterator[tuple[ImportNode, bool]]:
    """Every import statement with whether it runs at module level."""
    def visit(body: list[ast.stmt], top: bool) -> Iterator[tuple[ImportNode, bool]]:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield node, top
            elif isinstance(node, ast.If):
                inner_top = top and not _is_type_checking(node)
                yield from visit(node.body, inner_top)
                yield from visit(node.orelse, top)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody,
                              *[h.body for h in node.handlers]):
                    yield from visit(block, top)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                yield from visit(node.body, False)
            elif isinstance(node, ast.With | ast.AsyncWith | ast.For | ast.AsyncFor | ast.While):
                yield from visit(node.body, top)
    yield from visit(tree.body, True)


def imports() -> list[Import]:
    """The imports of this repo's packages made by the packages' modules."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            importer = _module(path)
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node, top in _walk(tree):
                targets: list[tuple[str, tuple[str, ...]]]
                if isinstance(node, ast.Import):
                    targets = [(a.name, ()) for a in node.names]
                elif node.module and node.level == 0:
                    targets = [(node.module, tuple(a.name for a in node.names))]
                else:
                    continue
                for name, names in targets:
                    if name.split(".")[0] in PACKAGES:
                        found.append(Import(importer, name, names, top))
    return found


def _matches(module: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(module, p) for p in patterns)


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violation(imp: Import) -> str | None:
    """Why this import breaks the table, or None."""
    src, dst = imp.importer, imp.imported
    top = src.split(".")[0]
    if top == "bot":
        if _matches(src, COMPOSITION_ROOTS) or _under(dst, "bot"):
            return None
        if _matches(src, OFFLINE_SCRIPTS) and _under(dst, "knowledge"):
            return None
        return "the engine imports only itself (but in a composition root)"
    if top == "migrations":
        return None if dst in ("migrations", "migrations.runner", "bot.errors") else \
            "migrations import only bot.errors"
    if _under(dst, "bot"):
        return f"{top} may not import the engine's {dst}" if _matches(dst, ENGINE_ONLY) \
            else None
    if top == "adapters":
        if not _under(dst, "adapters"):
            return "adapters import bot types and protocols only"
        platform = src.split(".")[1] if src.count(".") >= 1 else ""
        if _matches(dst, ADAPTER_SHARED) or _under(dst, f"adapters.{platform}") \
                or src in ADAPTER_SHARED or src == "adapters.registry":
            return None
        return "a platform's adapter never imports another platform's"
    if top in ("actions", "knowledge"):
        return None if _under(dst, top) else f"{top} imports bot types and protocols only"
    return None


def test_the_import_table_holds() -> None:
    found = imports()
    assert len(found) > 200  # the walk sees the code
    broken = {(i.importer, i.imported): why for i in found if (why := violation(i))}
    unexpected = {k: v for k, v in broken.items() if k not in KNOWN}
    assert not unexpected, "\n".join(f"{a} -> {b}: {why}" for (a, b), why in unexpected.items())
    assert KNOWN <= set(broken), f"fixed, remove from KNOWN: {KNOWN - set(broken)}"


def test_no_module_imports_another_modules_private_names() -> None:
    private = [(i.importer, i.imported, n) for i in imports() for n in i.names
               if n.startswith("_") and not n.startswith("__")]
    assert not private, private


def test_the_engine_has_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for imp in imports():
        if _under(imp.importer, "bot") and _under(imp.imported, "bot"):
            graph.setdefault(imp.importer, set()).add(imp.imported)
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


@pytest.mark.parametrize(("importer", "imported", "allowed"), [
    ("bot.http", "migrations", False),
    ("bot.runtime", "adapters.webhook.adapter", True),
    ("bot.assembly", "adapters.registry", True),
    ("actions.stage", "bot.assembly", False),
    ("adapters.slack.send", "adapters.discord.normalize", False),
    ("adapters.slack.send", "bot.worker", False),
    ("actions.stage", "bot.pipeline", True),
    ("knowledge.store", "actions.audit", False),
    ("bot.guardrails.training", "knowledge.embedders.onnx", True),
    ("bot.guardrails.stages", "knowledge.store", False),
])
def test_the_rules_themselves(importer: str, imported: str, allowed: bool) -> None:
    assert (violation(Import(importer, imported, (), True)) is None) == allowed
