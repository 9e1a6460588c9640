"""docs/design.md stays true to the code: every function its equation table names exists, and every
citation of the design in the code names a section that exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
CITING = ["hpdm_core", "hpdm_cli", "tests", "benchmarks", "examples", "ARCHITECTURE.md"]


def section(text: str, heading: str) -> str:
    """The body of the `## heading` section of a markdown text."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no section '## {heading}'"
    return match.group(1)


def resolve(name: str) -> object:
    """hpdm_core.<name>: the longest importable module prefix, then attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module("hpdm_core." + ".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute)
        return obj
    raise ModuleNotFoundError(name)


def table_functions(text: str) -> list[str]:
    """The backticked names in the last column of the equation table."""
    rows = [line for line in section(text, "Equations and their functions").splitlines() if line.startswith("| ")]
    names = []
    for row in rows[2:]:  # past the header and its rule
        last = re.split(r"(?<!\\)\|", row.strip())[-2]
        names += re.findall(r"`([^`]+)`", last)
    return names


def citing_files() -> list[Path]:
    files = []
    for name in CITING:
        path = ROOT / name
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix in (".py", ".md", ".sh")]
    return files


def test_every_function_of_the_equation_table_exists():
    names = table_functions(DESIGN.read_text())
    assert len(names) > 40
    missing = []
    for name in names:
        try:
            resolve(name)
        except (ModuleNotFoundError, AttributeError) as err:
            missing.append(f"{name} ({err})")
    assert not missing, "docs/design.md names functions that do not exist: " + ", ".join(missing)


def test_citations_of_the_design_name_its_sections():
    headings = set(re.findall(r"^## (.+)$", DESIGN.read_text(), re.M))
    cited, stale, old = 0, [], []
    for path in citing_files():
        text = path.read_text()
        where = path.relative_to(ROOT)
        if path == Path(__file__).resolve():
            continue
        old += [f"{where}:{text[:m.start()].count(chr(10)) + 1}" for m in re.finditer(r"\bDESIGN\.md", text)]
        for match in re.finditer(r'docs/design\.md`?, "([^"]+)"', text):
            cited += 1
            if match.group(1) not in headings:
                stale.append(f"{where}: \"{match.group(1)}\"")
    assert not old, "DESIGN.md is not in the repository; cite docs/design.md instead: " + ", ".join(old)
    assert not stale, f"sections not in docs/design.md ({sorted(headings)}): " + ", ".join(stale)
    assert cited >= 10


def test_the_table_reader_sees_a_missing_function():
    text = ("## Equations and their functions\n\n| rule | function |\n| --- | --- |\n"
            "| `a \\| b` | `pyramid.level_video` |\n| x | `pyramid.no_such_function` |\n")
    names = table_functions(text)
    assert names == ["pyramid.level_video", "pyramid.no_such_function"]
    resolve(names[0])
    try:
        resolve(names[1])
    except AttributeError:
        return
    raise AssertionError("a missing function resolved")
