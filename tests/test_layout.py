"""The layout as the README states it: SQL only in lima/store/, imports only go down, no import circle."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("lima", "dialogues", "service", "training", "evaluation", "ui", "studio")
# what each floor may import besides itself (README, "Layout")
MAY_IMPORT = {
    "lima": set(),
    "dialogues": {"lima"},
    "service": {"lima"},
    "training": {"lima", "dialogues", "evaluation.judge", "service"},
    "evaluation": {"lima", "dialogues"},
    "ui": {"lima", "dialogues", "service", "training", "evaluation"},
    "studio": set(PACKAGES),
}
SQL = re.compile(r"\bdb\[|\.execute\(|\.query\(|\.rows_where\(|\.count_where\(|\.conn\b|\bsqlite3\b|\bsqlite_utils\b|"
                 r"[\"'](?:select|insert into|update \w+ set|delete from|create table)\s", re.IGNORECASE)


def product_files():
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))
    yield from sorted((REPO / "bench").glob("*.py"))


def module_of(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def test_sql_lives_only_in_the_store():
    outside = [f"{path.relative_to(REPO)}:{number}: {line.strip()}" for path in product_files()
               if not path.is_relative_to(REPO / "lima" / "store")
               for number, line in enumerate(path.read_text().splitlines(), start=1) if SQL.search(line)]
    assert outside == []


def test_imports_only_go_down():
    wrong = []
    for path in product_files():
        if path.parent.name == "bench":
            continue
        floor = module_of(path).split(".")[0]
        for name in imports(path):
            target = name.split(".")[0]
            allowed = MAY_IMPORT[floor] | {floor}
            if target not in allowed and not any(name == a or name.startswith(a + ".") for a in allowed):
                wrong.append(f"{module_of(path)} imports {name}")
    assert wrong == []


def test_there_is_no_import_circle():
    modules = {module_of(p): p for p in product_files() if p.parent.name != "bench"}
    graph = {m: {n for n in imports(p) if n in modules and n != m} for m, p in modules.items()}

    def circle_from(start, node, seen):
        for nxt in graph[node]:
            if nxt == start:
                return [*seen, nxt]
            if nxt not in seen:
                found = circle_from(start, nxt, [*seen, nxt])
                if found:
                    return found
        return None

    circles = [" -> ".join([m, *c]) for m in graph if (c := circle_from(m, m, []))]
    assert circles == []
