"""The architecture rules of plugins/feedloop as checkers over a package directory.

Each checker takes the package's directory (plugins/feedloop, or a throwaway tree in a test) and returns
the problems it found as readable lines, so a test can prove the checker fails on a bad tree before
trusting its silence on the real one. Imports are read with `ast`, function-local ones included: a
dependency that runs later is still a dependency.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tempfile
import tokenize
from collections import deque
from dataclasses import dataclass
from pathlib import Path

# A module may import its own package or one of lower or equal rank (README, "Architecture").
RANKS = {"core": 0, "contract": 1, "ingest": 2, "quality": 2, "features": 2, "content": 2, "training": 3,
         "retrieval": 3, "alerts": 3, "promotion": 4, "serving": 4, "airflow": 5, "ops": 6}
AIRFLOW_BOUNDARY = "airflow"
MAX_LINES = 400
# A function-local import of a feedloop module says why it is lazy, on its line or the line above.
LAZY_COMMENT = re.compile(r"#\s*lazy:\s*\S")


@dataclass(frozen=True, order=True)
class Import:
    path: Path
    line: int
    source: str  # the importing module, e.g. feedloop.training.train
    target: str  # the module imported, e.g. feedloop.core.storage (a package when a name is not a module)
    local: bool  # inside a function: runs when called, not when the module is imported
    end_line: int
    written: str  # the dotted name as the statement spells it, e.g. feedloop.quality.ValidationFailed


def modules(root: Path) -> dict[str, Path]:
    """Every module under root by dotted name; a package is named by its __init__.py."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(root: Path) -> list[Import]:
    """Every import of a module of root's package, in file and line order."""
    known = modules(root)
    found: set[Import] = set()
    for name, path in known.items():
        reader = _Reader(name, path, root.name, known)
        reader.visit(ast.parse(path.read_text(), filename=str(path)))
        found |= reader.found
    return sorted(found)


class _Reader(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, top: str, known: dict[str, Path]) -> None:
        self.module, self.path, self.top, self.known = module, path, top, known
        self.package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        self.depth = 0
        self.found: set[Import] = set()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.package.split(".")
            base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
        for alias in node.names:
            # `from feedloop.core import storage` depends on the module feedloop.core.storage.
            written = f"{base}.{alias.name}"
            self._add(node, written if written in self.known else base, written)

    def _add(self, node: ast.stmt, target: str, written: str) -> None:
        if target.split(".")[0] == self.top:
            self.found.add(Import(self.path, node.lineno, self.module, target, self.depth > 0,
                                  node.end_lineno or node.lineno, written))


def _where(root: Path, path: Path, line: int | None = None) -> str:
    where = path.relative_to(root.parent).as_posix()
    return f"{where}:{line}" if line else where


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def import_cycles(root: Path) -> list[str]:
    """Each import cycle between modules as a chain, with the file:line of every link."""
    known = modules(root)
    edges: dict[str, dict[str, Import]] = {}
    for imp in imports(root):
        if imp.target in known and imp.target != imp.source:
            edges.setdefault(imp.source, {}).setdefault(imp.target, imp)
    cycles: dict[tuple[str, ...], list[str]] = {}
    for component in _tangles(edges):
        for start in sorted(component):
            cycle = _shortest_cycle(start, edges, component)
            turn = cycle.index(min(cycle))
            cycles.setdefault(tuple(cycle[turn:] + cycle[:turn]), cycle)
    chains = []
    for cycle in cycles.values():
        links = [edges[a][b] for a, b in zip(cycle, cycle[1:] + cycle[:1])]
        chain = " -> ".join([*cycle, cycle[0]])
        chains.append(f"{chain}  [{', '.join(_where(root, i.path, i.line) for i in links)}]")
    return sorted(chains)


def _tangles(edges: dict[str, dict[str, Import]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _shortest_cycle(start: str, edges: dict[str, dict[str, Import]], component: set[str]) -> list[str]:
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(edges.get(node, {})):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            if nxt in component and nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"{start} is in a tangle but on no cycle")


def upward_imports(root: Path) -> list[str]:
    """Imports of a higher-ranked package, and packages the rank table does not know."""
    top = root.name
    unranked = {_package(name): root / _package(name) if (root / _package(name)).is_dir() else path
                for name, path in modules(root).items() if _package(name) not in (None, *RANKS)}
    problems = [f"{_where(root, path)}: {top}.{package} has no rank in the layer table"
                for package, path in sorted(unranked.items())]
    upward: dict[tuple[Path, int, str, str, bool], list[str]] = {}
    for imp in imports(root):
        src, dst = _package(imp.source), _package(imp.target)
        if src in RANKS and dst in RANKS and RANKS[dst] > RANKS[src]:
            upward.setdefault((imp.path, imp.line, src, dst, imp.local), []).append(imp.written)
    for (path, line, src, dst, local), names in upward.items():
        problems.append(f"{_where(root, path, line)}: {top}.{src} (rank {RANKS[src]}) imports {', '.join(names)} "
                        f"from {top}.{dst} (rank {RANKS[dst]})" + (" inside a function" if local else ""))
    return problems


def long_modules(root: Path, limit: int = MAX_LINES) -> list[str]:
    """Modules over `limit` lines, each with its count."""
    counts = {path: len(path.read_text().splitlines()) for path in modules(root).values()}
    return [f"{_where(root, path)}: {n} lines" for path, n in counts.items() if n > limit]


def unexplained_lazy_imports(root: Path) -> list[str]:
    """Function-local imports of root's modules with no `# lazy: <why>` comment on their line or the line above."""
    problems: dict[tuple[Path, int], list[str]] = {}
    comments_of: dict[Path, dict[int, str]] = {}
    for imp in imports(root):
        comments = comments_of.setdefault(imp.path, _comments(imp.path))
        lines = range(imp.line - 1, imp.end_line + 1)
        if imp.local and not any(LAZY_COMMENT.search(comments.get(n, "")) for n in lines):
            problems.setdefault((imp.path, imp.line), []).append(imp.written)
    return [f"{_where(root, path, line)}: function-local import of {', '.join(targets)} has no '# lazy: <why>'"
            for (path, line), targets in problems.items()]


def _comments(path: Path) -> dict[int, str]:
    with path.open("rb") as source:
        return {t.start[0]: t.string for t in tokenize.tokenize(source.readline) if t.type == tokenize.COMMENT}


_PROBE = r'''
import importlib, json, pkgutil, sys

top, packages = sys.argv[1], sys.argv[2:]
report = {"airflow": None, "errors": []}


class Spy:
    """Notes, when `airflow` is first looked for, which modules of ours were importing it."""

    def find_spec(self, name, path=None, target=None):
        if name == "airflow" and report["airflow"] is None:
            frame, chain = sys._getframe(1), []
            while frame is not None:
                module = frame.f_globals.get("__name__", "")
                if module.split(".")[0] == top and (not chain or chain[-1][0] != module):
                    chain.append((module, frame.f_lineno))
                frame = frame.f_back
            report["airflow"] = {"chain": [f"{m}:{n}" for m, n in reversed(chain)]}


def load(name):
    try:
        return importlib.import_module(name)
    except Exception as error:
        report["errors"].append(f"{name}: {type(error).__name__}: {error}")
    finally:
        if report["airflow"] is not None and "module" not in report["airflow"]:
            report["airflow"]["module"] = name


if "airflow" in sys.modules:
    report["airflow"] = {"module": "(interpreter start-up)", "chain": []}
sys.meta_path.insert(0, Spy())
for package in packages:
    if report["airflow"] is not None:
        break
    loaded = load(package)
    names = pkgutil.walk_packages(getattr(loaded, "__path__", []), package + ".", onerror=lambda name: None)
    while report["airflow"] is None and (info := next(names, None)):
        load(info.name)
print(json.dumps(report))
'''


def airflow_at_import(root: Path) -> list[str]:
    """Import every module of the packages below the Airflow boundary in a fresh interpreter, lowest rank
    first; name the first one that loads `airflow`, with the import chain, and any that fail to import."""
    below = [f"{root.name}.{p}" for p, rank in sorted(RANKS.items(), key=lambda item: (item[1], item[0]))
             if rank < RANKS[AIRFLOW_BOUNDARY] and (root / p / "__init__.py").exists()]
    with tempfile.TemporaryDirectory() as airflow_home:  # should Airflow load anyway, it writes its config here
        run = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(root.parent)!r})\n{_PROBE}",
                              root.name, *below], check=False, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "AIRFLOW_HOME": airflow_home}, cwd=airflow_home)
    if run.returncode:
        return [f"the import probe crashed: {run.stderr.strip()}"]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    problems = [f"could not import {error}" for error in report["errors"]]
    if report["airflow"]:
        chain = " -> ".join([*report["airflow"]["chain"], "airflow"])
        problems.insert(0, f"importing {report['airflow']['module']} loads airflow: {chain}")
    return problems
