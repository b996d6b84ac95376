"""Import contract: the execution host (all of ``worker/``) reaches nothing of the trusted side, the CLI's
client commands reach nothing of the platform, ``evaluator`` and ``data_manifests`` import no other project
package, and ``api`` imports neither ``worker``, ``leaderboard_web``, ``segarena`` nor the app factory (``server``).

Walks the imports (``ast``, every ``import``/``from`` anywhere in a module, including those inside
functions) transitively within the project, starting from :data:`EXECUTION_HOST_MODULES` (every module under
``worker/``), and fails if any reaches a package of :data:`FORBIDDEN`. Third-party imports are not followed.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
FORBIDDEN = ("api", "leaderboard_web", "segarena")


def all_modules_under(package: str) -> tuple[str, ...]:
    """Every module of a project package."""
    base = ROOT / package
    return tuple(sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                        for p in base.rglob("*.py")))


EXECUTION_HOST_MODULES = all_modules_under("worker")


def module_file(name: str) -> Path | None:
    """The project file of module ``name`` (None: not a project module)."""
    parts = name.split(".")
    if parts[0] not in PROJECT_PACKAGES:
        return None
    path = ROOT.joinpath(*parts)
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    return None


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved; ``from x import y``
    yields x and x.y, since y may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {f for f in found if f}


def forbidden_paths(start: tuple[str, ...], forbidden: tuple[str, ...] | None = None,
                    allowed: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """For each forbidden module reached: the import chain that reaches it. ``allowed`` modules (and the
    packages above them) are neither reported nor followed."""
    forbidden = FORBIDDEN if forbidden is None else forbidden
    chains: dict[str, list[str]] = {m: [m] for m in start}
    queue = list(start)
    bad: dict[str, list[str]] = {}
    while queue:
        mod = queue.pop()
        path = module_file(mod)
        if path is None:
            continue
        for imported in sorted(imports_of(mod, path)):
            # a package's __init__ runs when any of its modules is imported
            candidates = [".".join(imported.split(".")[:i]) for i in range(1, imported.count(".") + 2)]
            if any(imported == a or imported.startswith(a + ".") for a in allowed):
                continue
            for cand in candidates:
                if cand.split(".")[0] in forbidden:
                    bad.setdefault(cand, chains[mod] + [cand])
                    continue
                if cand in chains or module_file(cand) is None:
                    continue
                chains[cand] = chains[mod] + [cand]
                queue.append(cand)
    return bad


def test_execution_host_modules_import_nothing_of_the_trusted_side():
    for mod in EXECUTION_HOST_MODULES:
        assert module_file(mod) is not None, f"{mod} is not a module of the project"
    bad = forbidden_paths(EXECUTION_HOST_MODULES)
    assert not bad, "the execution host imports the trusted side:\n" + "\n".join(
        " -> ".join(chain) for chain in bad.values())


@pytest.mark.parametrize("snippet, expected", [
    ("from api.settings import get_settings", "api.settings"),
    ("def f():\n    import leaderboard_web.pages\n", "leaderboard_web"),
    ("from segarena import output", "segarena"),
])
def test_the_walk_catches_direct_lazy_and_transitive_imports(tmp_path, monkeypatch, snippet, expected):
    """The checker is not vacuous: a module of a fake project that imports the trusted side directly,
    inside a function, or through another project module is caught, with its chain."""
    pkg = tmp_path / "worker"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "clean.py").write_text("import os\nfrom . import helper\n")
    (pkg / "helper.py").write_text(snippet + "\n")
    for name in FORBIDDEN:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    this = sys.modules[__name__]
    monkeypatch.setattr(this, "ROOT", tmp_path)
    monkeypatch.setattr(this, "PROJECT_PACKAGES", {"worker", *FORBIDDEN})
    bad = forbidden_paths(("worker.clean",))
    assert any(k.startswith(expected.split(".")[0]) for k in bad), bad
    chain = next(iter(bad.values()))
    assert chain[:3] == ["worker.clean", "worker", "worker.helper"] or chain[:2] == ["worker.clean", "worker.helper"]


# The CLI package: participants' and organizers' commands are HTTP clients; `segarena check` runs the sandbox
# locally (worker.sandbox, evaluator, data_manifests) and inspects the archive with the server's own archive
# checker (api.submissions.archive: stdlib only, so the verdict is the server's). The entry points that start the
# platform (`serve`, `scorer`, `worker`, `demo` in segarena/cli.py, segarena/serve.py, segarena/demo.py) are exempt.
CLIENT_MODULES = ("segarena.participant", "segarena.client", "segarena.upload", "segarena.output", "segarena.admin")
CHECK_ALLOWED = frozenset({"api.submissions.archive"})


def test_participant_and_admin_commands_import_no_server_and_no_worker():
    bad = forbidden_paths(CLIENT_MODULES, forbidden=("api", "worker", "leaderboard_web"))
    assert not bad, "a client command imports the platform:\n" + "\n".join(" -> ".join(c) for c in bad.values())


def test_check_runs_locally_without_the_server_side():
    bad = forbidden_paths(("segarena.check",), forbidden=("api", "leaderboard_web"), allowed=CHECK_ALLOWED)
    assert not bad, "segarena check imports the server side:\n" + "\n".join(" -> ".join(c) for c in bad.values())
    # the one allowed server module is a pure archive checker: it imports nothing of the project but, lazily and
    # optionally, the server's limits
    archive = module_file("api.submissions.archive")
    project = {m for m in imports_of("api.submissions.archive", archive) if m.split(".")[0] in PROJECT_PACKAGES}
    assert project <= {"api.settings", "api.settings.get_settings"}, project
    assert forbidden_paths(("segarena.check",), forbidden=("api",)), "the walk would not see the allowed import"


def test_the_contract_covers_the_whole_execution_host():
    """Every module of worker/ is walked (a new module is covered without editing this file), and the single-host
    runner, reaper and registry that read the database are gone."""
    assert len(EXECUTION_HOST_MODULES) >= 8 and {"worker.sandbox", "worker.exec_tasks", "worker.shard"} <= set(
        EXECUTION_HOST_MODULES)
    for gone in ("worker.runner", "worker.reaper", "worker.registry", "worker.tasks", "worker.celery_app"):
        assert module_file(gone) is None, f"{gone} still exists"


# Layers (docs/architecture.md): the pure packages stand alone; the API is below the pages, the CLI and the workers.
PURE_PACKAGES = ("evaluator", "data_manifests")
API_FORBIDDEN = ("worker", "leaderboard_web", "segarena", "server")


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_packages_import_no_other_project_package(package):
    others = tuple(sorted(p for p in PROJECT_PACKAGES if p not in (package, "tests")))
    assert {"api", "worker", "segarena"} <= set(others), others
    bad = forbidden_paths(all_modules_under(package), forbidden=others)
    assert not bad, f"{package} imports other project packages:\n" + "\n".join(" -> ".join(c) for c in bad.values())


def test_api_imports_neither_worker_nor_pages_nor_cli_nor_the_app_factory():
    modules = all_modules_under("api")
    assert "api.settings" in modules, modules
    bad = forbidden_paths(modules, forbidden=API_FORBIDDEN)
    assert not bad, "api imports a layer above it:\n" + "\n".join(" -> ".join(c) for c in bad.values())


def module_level_imports(name: str, path: Path) -> set[str]:
    """What importing ``name`` runs: the imports of its module body (also inside top-level ``if``/``try``/class
    bodies), not those inside functions, which run only when that function is called."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.ClassDef)):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []) or [])
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
    visit(tree.body)
    return {f for f in found if f}


# The participant commands run through segarena.cli: what `segarena configure|submit|status|logs|results|leaderboard|
# cancel|whoami` imports is segarena.cli's module body plus, transitively and fully, the modules it names.
PARTICIPANT_COMMANDS = ("configure", "submit", "status", "logs", "results", "leaderboard", "cancel", "whoami")
SERVER_CODE = ("api", "worker", "leaderboard_web", "server", "evaluator", "data_manifests")


def test_participant_commands_reach_no_server_code():
    cli = module_file("segarena.cli")
    top = sorted(m for m in module_level_imports("segarena.cli", cli) if m.split(".")[0] in PROJECT_PACKAGES)
    assert "segarena.participant" in top, top
    direct = [m for m in top if m.split(".")[0] in SERVER_CODE]
    assert not direct, f"segarena.cli imports server code at module level: {direct}"
    bad = forbidden_paths(tuple(m for m in top if module_file(m) is not None), forbidden=SERVER_CODE)
    assert not bad, "a participant command reaches server code:\n" + "\n".join(" -> ".join(c) for c in bad.values())
    # the participant commands are the functions of segarena.participant registered on the root app
    source = module_file("segarena.participant").read_text()
    for command in PARTICIPANT_COMMANDS:
        assert f"def {command}(" in source, command


def test_module_level_walk_skips_function_bodies(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\nif True:\n    import json\ntry:\n    import a.b\nexcept ImportError:\n"
                    "    import c\ndef f():\n    import api.settings\nclass K:\n    import d\n")
    assert module_level_imports("m", path) == {"os", "json", "a.b", "c", "d"}
