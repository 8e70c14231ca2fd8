"""The house rules that keep the organisers' side light and separate."""

import ast
import os
import subprocess
import sys
from pathlib import Path

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
