"""An output format is one registry entry: a format registered from outside cnncli (here, from this
file alone) becomes a --format choice for the verbs it can write, is picked by --output's suffix,
and may be resumed only if it can read its own rows back."""

from __future__ import annotations

import json

import pytest
from conftest import REPO
from typer.testing import CliRunner

from cnncli.cli.app import app
from cnncli.output.formats import FORMATS, OutputFormat
from cnncli.output.resume import Finished

BUNDLE = REPO / "tests" / "fixtures" / "bundles-v1" / "image"
EXPECTED = [json.loads(line) for line in (BUNDLE / "expected.jsonl").read_text().splitlines()]
INPUTS = [row["input"] for row in EXPECTED]  # relative to the repository
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(arg) for arg in args])


# -- the toy format: tab-separated values, defined here alone ---------------------------------------


def write_tsv_rows(batches, stream, layout) -> None:
    """A header line (not when appending), then input, label and score per row, tab-separated."""
    if layout.header:
        stream.write("input\tlabel\tscore\n")
    for batch in batches:
        stream.write("".join(f"{row.input}\t{row.label or ''}\t{row.score or 0:.6f}\n" for row in batch))
        stream.flush()


def write_tsv_result(kind, result, stream) -> None:
    """A result's numbers at its top level, one `name<TAB>value` line each."""
    stream.write(f"# {kind}\n")
    for name, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            stream.write(f"{name}\t{value}\n")


def read_tsv_rows(path, text, layout, key):
    """For --resume: the inputs of the rows already written, and where each row ends (ends[0]: after the header)."""
    lines = text.splitlines(keepends=True)
    if not lines:
        return Finished(), [0]
    ends = [len(lines[0])]
    for line in lines[1:]:
        ends.append(ends[-1] + len(line))
    return Finished([line.split("\t")[0] for line in lines[1:]], header=True), ends


def registered_tsv(read_back=None):
    FORMATS.register("tsv", OutputFormat(write_result=write_tsv_result, write_rows=write_tsv_rows,
                                         read_back=read_back, suffixes=(".tsv",), rows_note="tab-separated"))
    try:
        yield "tsv"
    finally:
        FORMATS.unregister("tsv")


@pytest.fixture
def tsv(monkeypatch):
    monkeypatch.chdir(REPO)  # the bundle's expected inputs are relative to the repository
    yield from registered_tsv()


@pytest.fixture
def resumable_tsv(monkeypatch):
    monkeypatch.chdir(REPO)
    yield from registered_tsv(read_back=read_tsv_rows)


def tsv_rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    assert lines[0] == "input\tlabel\tscore"
    return [line.split("\t") for line in lines[1:]]


# -- the tests --------------------------------------------------------------------------------------


def test_a_format_registered_from_a_test_file_writes_predictions_through_the_cli(tsv):
    result = cli("predict", BUNDLE, *INPUTS, "--format", "tsv", "--workers", 0)
    assert result.exit_code == 0, result.output
    rows = tsv_rows(result.stdout)
    assert [row[:2] for row in rows] == [[expected["input"], expected["label"]] for expected in EXPECTED]
    assert [float(row[2]) for row in rows] == pytest.approx([expected["score"] for expected in EXPECTED], abs=2e-6)


def test_a_format_registered_from_a_test_file_writes_an_evaluation_through_the_cli(tsv):
    result = cli("eval", BUNDLE, "sample_data/images", "--format", "tsv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "# evaluation"
    numbers = dict(line.split("\t") for line in lines[1:])
    assert 0 <= float(numbers["accuracy"]) <= 1


def test_a_registered_format_is_listed_with_the_others_when_a_name_is_wrong(tsv):
    result = cli("eval", BUNDLE, "--format", "xml")
    assert result.exit_code == 2
    assert "--format: unknown output format 'xml' (known: table, json, csv, jsonl, tsv)" in result.output


def test_an_output_file_with_a_registered_suffix_is_written_in_that_format(tsv, tmp_path):
    result = cli("predict", BUNDLE, *INPUTS[:3], "-o", tmp_path / "out.TSV", "--workers", 0)
    assert result.exit_code == 0, result.output
    assert [row[0] for row in tsv_rows((tmp_path / "out.TSV").read_text())] == INPUTS[:3]


def test_an_output_file_with_a_suffix_no_format_registered_is_still_csv(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    result = cli("predict", BUNDLE, INPUTS[0], "-o", tmp_path / "out.tsv", "--workers", 0)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.tsv").read_text().startswith("input,label,score,top,error\n")


def test_resume_is_refused_for_a_format_that_cannot_read_its_rows_back(tsv, tmp_path):
    result = cli("predict", BUNDLE, INPUTS[0], "-o", tmp_path / "out.tsv", "--resume", "--workers", 0)
    assert result.exit_code == 2 and not (tmp_path / "out.tsv").exists()
    assert "--resume: rows can be appended in csv or jsonl, not tsv" in result.output


def test_resume_continues_a_file_of_a_format_registered_as_resumable(resumable_tsv, tmp_path):
    whole = cli("predict", BUNDLE, *INPUTS, "-o", tmp_path / "whole.tsv", "--workers", 0)
    assert whole.exit_code == 0, whole.output
    resumed = tmp_path / "resumed.tsv"
    resumed.write_text("input\tlabel\tscore\n" + "".join(f"{name}\t?\t0.5\n" for name in INPUTS[:4]) + "cut sh")
    result = cli("predict", BUNDLE, *INPUTS, "-o", resumed, "--resume", "--workers", 0)
    assert result.exit_code == 0, result.output
    assert resumed.read_text() == (tmp_path / "whole.tsv").read_text()
