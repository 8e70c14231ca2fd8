"""The house rules that keep the organisers' side light and separate."""

import ast
import configparser
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from mura import cli

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_SCORER = {"torch", "torchvision", "reference_model", "PIL"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_scorer_never_imports_the_participants_side():
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_modules(path) & FORBIDDEN_IN_SCORER)
        for path in (ROOT / "scorer").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_mura_score_loads_neither_torch_nor_the_heavy_libraries(tmp_path):
    import example_data

    test = example_data.make_test(n=30)
    example_data.write_gold(tmp_path / "gold.csv", test)
    example_data.write_predictions(tmp_path / "out.csv", test.studies, list(test.truth))
    probe = (
        "import sys; from mura.cli import main; sys.argv = ['mura', 'score', sys.argv[1], sys.argv[2], "
        "'--resamples', '50']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted({'torch', 'torchvision', 'pandas', 'sklearn', 'scipy', 'reference_model'} & "
        "{m.split('.')[0] for m in sys.modules})\n"
        "print('HEAVY', heavy, file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "gold.csv"), str(tmp_path / "out.csv")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert "HEAVY []" in proc.stderr, proc.stderr


def test_a_command_whose_extra_is_missing_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(cli.EXTRA_MODULES, "model", ("a_module_that_is_not_installed",))
    monkeypatch.setitem(cli.COMMANDS, "needs-model", ("scorer.cli", "score", "model", "test"))
    result = CliRunner().invoke(cli.cli, ["needs-model", "--help"])
    assert result.exit_code == 1
    assert "needs the 'model' extra" in result.output
    assert "pip install 'mura-kit[model]'" in result.output


def test_help_lists_commands_without_importing_them():
    result = CliRunner().invoke(cli.cli, ["--help"])
    assert result.exit_code == 0
    for name in cli.COMMANDS:
        assert name in result.output


# --- the layering: which room may import which ---------------------------------------------------
# Checked on the source (ast), with every import counted wherever it stands: at module level, in a
# function, under `if TYPE_CHECKING:`; relative imports resolved. Each rule is also run on a copy
# of the kit with a violation planted, at module level and in a function, so that none can pass
# by matching nothing.

PACKAGES = ("scorer", "mura", "reference_model", "submission")
ROOMS = ("scorer.harness", "scorer.leaderboard", "scorer.codabench")  # built on the scoring core


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def third_party(name: str) -> bool:
    top = name.split(".")[0]
    return top not in sys.stdlib_module_names and top not in PACKAGES


def kit_modules(root: Path) -> dict[str, Path]:
    """Every module of the kit under `root`, by its dotted name (a package by its __init__)."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(module: str, path: Path) -> set[str]:
    """The modules `module` imports anywhere in its source; `from a import b` counts as a and a.b
    (b may be a module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    return {module: imports_of(module, path) for module, path in kit_modules(root).items()}


def is_core(module: str) -> bool:
    """The scoring core: scorer's top-level modules (paths, formats, validate, gold, metrics,
    bootstrap, pipeline, report, ..., its cli)."""
    return within(module, "scorer") and not within(module, *ROOMS)


@dataclass(frozen=True)
class Rule:
    name: str
    applies: Callable[[str], bool]  # to a module of the kit, by name
    forbids: Callable[[str], bool]  # an imported module, by name
    plant: tuple[str, str]  # for the planted violation: a file the rule applies to, an import it forbids


RULES = (
    Rule(
        "the scoring core imports nothing from the harness, the leaderboard or Codabench",
        is_core,
        lambda name: within(name, *ROOMS),
        ("scorer/metrics.py", "scorer.leaderboard.rank"),
    ),
    Rule(
        "the leaderboard does not import the harness",
        lambda module: within(module, "scorer.leaderboard"),
        lambda name: within(name, "scorer.harness"),
        ("scorer/leaderboard/rank.py", "scorer.harness.evaluate"),
    ),
    Rule(
        "the harness does not import Codabench's room (which builds on the harness)",
        lambda module: within(module, "scorer.harness"),
        lambda name: within(name, "scorer.codabench"),
        ("scorer/harness/progress.py", "scorer.codabench.layout"),
    ),
    Rule(
        "the leaderboard reads only Codabench's board layout from its room (which builds on the leaderboard)",
        lambda module: within(module, "scorer.leaderboard"),
        lambda name: within(name, "scorer.codabench") and not within(name, "scorer.codabench.layout"),
        ("scorer/leaderboard/codabench.py", "scorer.codabench.bundle"),
    ),
    Rule(
        "Codabench's board layout uses only the scoring core (the leaderboard reads it)",
        lambda module: within(module, "scorer.codabench.layout"),
        lambda name: within(name, *ROOMS) and not within(name, "scorer.codabench.layout"),
        ("scorer/codabench/layout.py", "scorer.leaderboard.schema"),
    ),
    Rule(
        "the participants' side uses only the scorer's core (paths, formats, errors, files)",
        lambda module: within(module, "reference_model", "submission"),
        lambda name: within(name, *ROOMS),
        ("reference_model/data.py", "scorer.leaderboard.store"),
    ),
    Rule(
        "click stays in the command modules (cli.py): the rest takes and returns data",
        lambda module: within(module, "scorer") and module.rpartition(".")[2] != "cli",
        lambda name: within(name, "click"),
        ("scorer/pipeline.py", "click"),
    ),
    Rule(
        "the leaderboard imports neither numpy nor matplotlib (render answers at once)",
        lambda module: within(module, "scorer.leaderboard"),
        lambda name: within(name, "numpy", "matplotlib"),
        ("scorer/leaderboard/store.py", "numpy"),
    ),
    Rule(
        "`mura` imports its commands when they run (COMMANDS), so `mura --help` needs neither side",
        lambda module: within(module, "mura"),
        lambda name: (
            (third_party(name) and not within(name, "click"))
            or (
                within(name, "scorer", "reference_model")
                and name != "scorer"
                and not within(name, "scorer.errors")
            )
        ),
        ("mura/cli.py", "scorer.pipeline"),
    ),
)


def broken(rule: Rule, root: Path) -> dict[str, list[str]]:
    """{module: the imports it makes that `rule` forbids}."""
    found = {
        module: sorted(name for name in names if rule.forbids(name))
        for module, names in import_graph(root).items()
        if rule.applies(module)
    }
    return {module: names for module, names in found.items() if names}


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_the_rooms_import_only_what_the_layering_allows(rule):
    assert broken(rule, ROOT) == {}


def kit_copy(tmp_path: Path) -> Path:
    root = tmp_path / "kit"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", root / "setup.cfg")
    return root


PLANTS = {
    "module level": "import {name}\n",
    "in a function": "def _planted():\n    import {name}\n",
    "from-import in a function": "def _planted():\n    from {package} import {last}\n",
}


@pytest.mark.parametrize("where", PLANTS)
@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_each_layering_rule_finds_a_planted_violation(tmp_path, rule, where):
    root = kit_copy(tmp_path)
    file, name = rule.plant
    package, _, last = name.rpartition(".") if "." in name else (name, "", "anything")
    with open(root / file, "a", encoding="utf-8") as out:
        out.write("\n\n" + PLANTS[where].format(name=name, package=package, last=last))
    module = ".".join(Path(file).with_suffix("").parts)
    assert name in broken(rule, root).get(module, [])


def test_a_relative_import_is_resolved(tmp_path):
    root = kit_copy(tmp_path)
    with open(root / "scorer/leaderboard/rank.py", "a", encoding="utf-8") as out:
        out.write("\n\ndef _planted():\n    from ..harness import evaluate\n")
    assert "scorer.harness.evaluate" in broken(RULES[1], root)["scorer.leaderboard.rank"]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The kit's modules that import each other in a circle (strongly connected, more than one)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for other in sorted(graph[module] & graph.keys()):
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            circle = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(circle) > 1:
                found.append(sorted(circle))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def test_no_two_modules_import_each_other(tmp_path):
    """Not even under TYPE_CHECKING or in a function: a circle means one of them holds what both
    need."""
    assert cycles(import_graph(ROOT)) == []
    root = kit_copy(tmp_path)
    with open(root / "scorer/leaderboard/records.py", "a", encoding="utf-8") as out:
        out.write("\n\nif TYPE_CHECKING:\n    from scorer.leaderboard.store import Store\n")
    assert cycles(import_graph(root)) == [["scorer.leaderboard.records", "scorer.leaderboard.store"]]


# --- ship what runs: the requirements are what the code imports ----------------------------------


def requirements(root: Path) -> dict[str, set[str]]:
    """setup.cfg's requirements, as distribution names: {"base": ..., "model": ..., "dev": ...}."""
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")

    def names(text: str) -> set[str]:
        lines = (line.split("#")[0].strip() for line in text.splitlines())
        return {re.match(r"[A-Za-z0-9._-]+", line).group() for line in lines if line}

    extras = config["options.extras_require"]
    return {"base": names(config["options"]["install_requires"]), **{k: names(v) for k, v in extras.items()}}


def modules_of(distributions: set[str]) -> set[str]:
    """The top-level modules the installed `distributions` provide."""
    canonical = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions}
    return {
        module
        for module, providers in importlib.metadata.packages_distributions().items()
        if any(re.sub(r"[-_.]+", "-", p).lower() in canonical for p in providers)
    }


def undeclared(root: Path) -> dict[str, list[str]]:
    """{module: third-party modules it imports that its side's requirements do not provide}: the
    organisers' side (scorer, mura) from the base install, the participants' from base + model."""
    needs = requirements(root)
    organisers = modules_of(needs["base"])
    participants = modules_of(needs["base"] | needs["model"])
    found = {}
    for module, names in import_graph(root).items():
        allowed = participants if within(module, "reference_model", "submission") else organisers
        missing = sorted({n.split(".")[0] for n in names if third_party(n)} - allowed)
        if missing:
            found[module] = missing
    return found


def unimported(root: Path) -> list[str]:
    """The base requirements no module of the organisers' side (scorer, mura) imports: what only
    the participants' side uses belongs in the model extra."""
    imported = {
        name.split(".")[0]
        for module, names in import_graph(root).items()
        if within(module, "scorer", "mura")
        for name in names
    }
    return sorted(d for d in requirements(root)["base"] if not modules_of({d}) & imported)


def test_the_code_imports_only_what_its_side_requires(tmp_path):
    assert undeclared(ROOT) == {}
    root = kit_copy(tmp_path)
    with open(root / "scorer/metrics.py", "a", encoding="utf-8") as out:
        out.write("\n\ndef _planted():\n    import sklearn.metrics\n")
    assert undeclared(root) == {"scorer.metrics": ["sklearn"]}


def test_the_base_install_requires_only_what_the_code_imports(tmp_path):
    assert unimported(ROOT) == []
    root = kit_copy(tmp_path)
    config = (root / "setup.cfg").read_text()
    (root / "setup.cfg").write_text(
        config.replace("install_requires =\n", "install_requires =\n    pandas>=2.0\n")
    )
    assert unimported(root) == ["pandas"]
