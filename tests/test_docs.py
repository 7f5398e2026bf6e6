"""The documents name files that exist: a module moved or renamed leaves no stale path behind in
README.md or docs/ (RELIABILITY's tables named `recipe_yaml.py` and `bundle_schema.py` long after
the package was regrouped)."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "cnncli"
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SUBPACKAGES = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists()}
PACKAGE_PATH = re.compile(r"(?<![\w/.-])cnncli/((?:[\w-]+/)*[\w-]+\.py)\b")  # cnncli/files/lock.py
QUOTED_PATH = re.compile(r"`((?:[\w-]+/)*[\w-]+\.py)`")  # `files/lock.py`, `names.py`, `test_fuzz.py`


def stale_paths(document: Path) -> list[str]:
    """'document:line: path' for each module path the document names that is no file: one written
    from the repository (cnncli/...), or in backticks from the package (`files/lock.py`, a ground
    floor module like `names.py`) or a test file (`test_fuzz.py`)."""
    stale = []
    for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), start=1):
        paths = [PACKAGE / path for path in PACKAGE_PATH.findall(line)]
        for path in QUOTED_PATH.findall(line):
            first = path.split("/")[0]
            if first in SUBPACKAGES:
                paths.append(PACKAGE / path)
            elif "/" not in path:
                paths.append(REPO / "tests" / path if path.startswith("test_") else PACKAGE / path)
        stale += [f"{document.name}:{number}: {path.relative_to(REPO)}" for path in paths if not path.is_file()]
    return stale


def test_every_module_path_in_the_documents_names_a_file_that_exists():
    stale = [entry for document in DOCUMENTS for entry in stale_paths(document)]
    assert not stale, "\n".join(stale)


def test_the_architecture_map_lists_files_that_exist_in_their_package():
    """docs/ARCHITECTURE.md's map names each package's files by their bare names under it."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text.split("```\ncnncli/\n", 1)[1].split("```", 1)[0]
    package, missing = PACKAGE, []
    for line in block.splitlines():
        if heading := re.match(r"^  (\w+)/ ", line):
            package = PACKAGE / heading.group(1)
        elif re.match(r"^  \S", line):
            package = PACKAGE  # a ground-floor module
        missing += [f"{package.name}/{name}" for name in re.findall(r"(?<![\w/])(\w+\.py)\b", line)
                    if not (package / name).is_file()]
    assert package != PACKAGE and not missing, missing


def test_the_check_finds_a_stale_path(tmp_path):
    document = tmp_path / "stale.md"
    document.write_text("| `recipe_yaml.py`, `bundle/schema.py` | cnncli/config.py, `test_nowhere.py` |\n")
    assert stale_paths(document) == ["stale.md:1: cnncli/config.py", "stale.md:1: cnncli/recipe_yaml.py",
                                     "stale.md:1: tests/test_nowhere.py"]


def test_every_command_summary_in_cnncli_help_is_one_short_line():
    """`cnncli --help` lists each command with the first paragraph of its docstring, line breaks
    kept: one line of at most 66 characters fits beside the names at COLUMNS=80."""
    import typer.main

    from cnncli.cli.app import app

    for name, command in typer.main.get_command(app).commands.items():
        summary = command.help.strip().split("\n\n")[0]
        assert "\n" not in summary and len(summary) <= 66, f"{name}: {summary!r}"
