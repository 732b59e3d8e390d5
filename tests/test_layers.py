"""The folders are the architecture: each package imports only what DESIGN.md allows it to."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"schemas", "bus", "executors", "projectors", "gateway", "swarm"}

# Which of our packages each package may import (imports point inward, towards `schemas`).
ALLOWED_OURS = {
    "schemas": set(),
    "bus": {"schemas"},
    "executors": {"schemas", "bus"},
    "projectors": {"schemas", "bus"},
    "gateway": {"schemas", "bus"},
    "swarm": OURS,
}
# Third-party modules that only their owning packages may import (the executors serve the model proxy
# and the scripted model over aiohttp.web).
OWNED = {
    "nats": {"bus"},
    "duckdb": {"projectors"},
    "docker": {"executors"},
    "openai": {"executors"},
    "aiohttp.web": {"gateway", "executors"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _violations(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in OURS and top != package and top not in ALLOWED_OURS[package]:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
            for owned, owners in OWNED.items():
                if (name == owned or name.startswith(owned + ".")) and package not in owners:
                    allowed = " and ".join(sorted(owners))
                    found.append(f"{path.relative_to(ROOT)} imports {name}, which only {allowed} may")
    return found


@pytest.mark.parametrize("package", sorted(OURS))
def test_package_imports_only_what_its_layer_allows(package: str) -> None:
    """No package reaches outward or imports a library another package owns."""
    assert (ROOT / package / "__init__.py").is_file()
    assert _violations(package) == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The import walker itself finds a forbidden import (so the rule above cannot pass vacuously)."""
    sample = tmp_path / "sample.py"
    sample.write_text("import nats\nfrom aiohttp import web\nfrom bus.log import Log\n")
    assert {"nats", "aiohttp", "aiohttp.web", "bus.log", "bus.log.Log"} <= _imports(sample)
