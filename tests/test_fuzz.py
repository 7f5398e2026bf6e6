"""Property-based fuzzing (issue 13): hostile files through predict, hostile recipes and model.json
documents through loading. Whatever comes in, nothing escapes but a row with an error or one line
with exit status 2.

Default run: at least 2,000 files across .png/.jpg/.wav/.flac/.mp3/.txt/.csv through predict and
at least 500 recipes and model.json documents through loading (counted and asserted below); the
`slow` variants draw ten times as many. Examples are derandomized, so a run is reproducible.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections import Counter
from io import StringIO
from pathlib import Path

import hostile
import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cnncli.bundle.io import load_bundle
from cnncli.cli.app import app
from cnncli.errors import CnncliError
from cnncli.output.rows import write_predictions
from cnncli.verbs.predict import predict

FIXTURES = REPO / "tests" / "fixtures" / "bundles-v1"
ROUTE = {".png": "image", ".jpg": "image", ".wav": "audio", ".flac": "audio", ".mp3": "audio", ".txt": "text",
         ".csv": "text"}
runner = CliRunner()


def fuzz_settings(examples: int):
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- hostile files --------------------------------------------------------------------------------

suffixes = st.sampled_from(hostile.SUFFIXES)
sizes = st.one_of(st.integers(0, 70_000), st.sampled_from([0, 1, 2 ** 16 - 1, 2 ** 24, 2 ** 31 - 1, 2 ** 32 - 1]))


@st.composite
def hostile_file(draw) -> tuple[str, bytes]:
    """(suffix, content) of one hostile file."""
    suffix = draw(suffixes)
    real = draw(st.sampled_from(hostile.real_samples()[suffix]))
    kind = draw(st.sampled_from(["bytes", "empty", "truncated", "flipped", "lie", "lie", "nonfinite", "text"]))
    if kind == "bytes":
        return suffix, draw(st.binary(max_size=3000))
    if kind == "empty":
        return suffix, b""
    if kind == "truncated":
        return suffix, hostile.truncated(real, draw(st.floats(0, 1)))
    if kind == "flipped":
        changes = draw(st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)), min_size=1, max_size=12))
        return suffix, hostile.flipped(real, changes)
    if kind == "nonfinite" and suffix in (".wav", ".flac", ".mp3"):
        return ".wav", hostile.float_wav(draw(st.lists(st.sampled_from(hostile.AUDIO_VALUES), max_size=8)))
    if kind in ("text", "nonfinite") or suffix in (".txt", ".csv"):
        words = draw(st.lists(st.sampled_from(hostile.MARKUP_WORDS), max_size=12))
        lines = [hostile.markup_text(words), *draw(st.lists(st.text(max_size=30), max_size=3))]
        content = "\n".join(lines).encode("utf-8", "surrogatepass")
        if draw(st.booleans()):
            content += draw(st.binary(min_size=1, max_size=8))  # bytes that are rarely UTF-8
        return draw(st.sampled_from([".txt", ".csv"])), content
    return suffix, draw(header_lie(suffix, real))


@st.composite
def header_lie(draw, suffix: str, real: bytes) -> bytes:
    if suffix == ".png":
        return hostile.png_header(draw(sizes), draw(sizes), draw(st.sampled_from([1, 8, 16, 3])),
                                  draw(st.sampled_from([0, 2, 3, 4, 6, 7])), draw(st.booleans()))
    if suffix == ".jpg":
        return hostile.jpeg_with_size(real, draw(st.integers(0, 65535)), draw(st.integers(0, 65535)))
    if suffix == ".flac":
        return hostile.flac_with_streaminfo(real, draw(st.integers(0, 2 ** 20 - 1)), draw(st.integers(1, 8)),
                                            draw(st.integers(4, 32)), draw(st.integers(0, 2 ** 36 - 1)))
    payload = draw(st.one_of(st.binary(max_size=2000), st.just(real[44:])))
    return hostile.wav_header(draw(st.one_of(st.integers(0, 2 ** 32 - 1), st.sampled_from([8000, 1, 4_000_000_000]))),
                              draw(st.integers(0, 2 ** 16 - 1)), draw(st.sampled_from([0, 8, 16, 24, 32, 64, 7])),
                              draw(st.sampled_from([1, 3, 0xFFFE, 0, 85])), draw(sizes), payload)


@pytest.fixture(scope="module")
def bundles():
    return {kind: load_bundle(FIXTURES / kind) for kind in ("image", "audio", "text")}


def check_rows(bundle, paths: list[str], rows: list) -> None:
    """One row per input, in order; each a prediction or an error on one line naming its input."""
    samples = list(bundle.modality.expand_inputs(paths))
    assert len(rows) == len(samples)
    for sample, row in zip(samples, rows):
        assert row.input == (sample.content if isinstance(sample.content, str) else sample.locator)
        if row.error is not None:
            assert row.error and "\n" not in row.error.replace(sample.locator, "") and row.label is None
            assert sample.locator in row.error or sample.locator.rsplit(":", 1)[0] in row.error
        else:
            assert row.label in bundle.labels and 0 <= row.score <= 1 and math.isfinite(row.score)
    for form in ("table", "csv", "jsonl"):
        stream = StringIO()
        counts = write_predictions(iter([rows]), form, stream)  # one batch of rows
        assert counts["rows"] == len(rows)
        if form == "jsonl":
            for line in stream.getvalue().split("\n")[:-1]:  # (a sentence may hold U+2028: only \n ends a row)
                json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in JSON output"))


def run_predict_fuzz(bundles, examples: int, minimum: int) -> Counter:
    seen: Counter = Counter()

    @fuzz_settings(examples)
    @given(files=st.lists(hostile_file(), min_size=12, max_size=16),
           sentences=st.lists(st.lists(st.sampled_from(hostile.MARKUP_WORDS), max_size=8), max_size=3),
           markup_names=st.booleans())
    def one_batch(files, sentences, markup_names):
        folder = Path(tempfile.mkdtemp(prefix="cnncli-fuzz-"))
        try:
            routed: dict[str, list[str]] = {"image": [], "audio": [], "text": []}
            for index, (suffix, content) in enumerate(files):
                name = f"{index:02d}{'[x][bold]b[' if markup_names else ''}{suffix}"  # (a name cannot hold /)
                (folder / name).write_bytes(content)
                routed[ROUTE[suffix]].append(str(folder / name))
                seen[suffix] += 1
            routed["text"] += [text for words in sentences  # ("-" alone means: read stdin)
                               if (text := hostile.markup_text(words)).strip() and text != "-"]
            for kind, paths in routed.items():
                if paths:
                    rows = list(predict(bundles[kind], paths, top_k=2, batch_size=64))
                    check_rows(bundles[kind], paths, rows)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    one_batch()
    assert sum(seen.values()) >= minimum and set(seen) == set(hostile.SUFFIXES), seen
    return seen


def test_two_thousand_hostile_files_through_predict_raise_nothing(bundles):
    run_predict_fuzz(bundles, examples=160, minimum=2000)


@pytest.mark.slow
def test_twenty_thousand_hostile_files_through_predict_raise_nothing(bundles):
    run_predict_fuzz(bundles, examples=1600, minimum=20000)


def test_a_folder_of_hostile_files_through_the_command_line_is_rows_and_exit_status_1(tmp_path):
    """The same files through `cnncli predict`: every input gets its row; errors make the status 1."""
    import random

    generator = random.Random(0)
    samples = hostile.real_samples()
    for index in range(60):
        suffix = hostile.SUFFIXES[index % 5]  # the image and audio suffixes
        content = hostile.truncated(generator.choice(samples[suffix]), generator.random())
        (tmp_path / f"{index:02d}{suffix}").write_bytes(content)
    for kind, pattern in (("image", "*.[pj][np]g"), ("audio", "*.[wfm][al][vap]*")):
        paths = sorted(str(path) for path in tmp_path.glob(pattern))
        result = runner.invoke(app, ["predict", str(FIXTURES / kind), *paths, "--format", "jsonl"])
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert [row["input"] for row in rows] == paths
        errors = sum(row["error"] is not None for row in rows)
        assert result.exit_code == (1 if errors else 0) and "Traceback" not in result.output


# -- hostile recipes and model.json documents -----------------------------------------------------

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.sampled_from([0, -1, 1, 10 ** 9, 2 ** 63]),
              st.floats(allow_nan=False), st.text(max_size=12), st.sampled_from(["[/x]", "full", "same", "global"])),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children,
                                                                               max_size=4)),
    max_leaves=12)


def paths_of(value, prefix=()):
    """Every key path of a nested dict/list document."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths_of(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths_of(child, (*prefix, index))


@st.composite
def mutated(draw, document: dict):
    """`document` with a few values replaced, keys removed or added, anywhere in it."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(paths_of(document))))
        if not path:
            return draw(json_values)
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if action == "remove" and isinstance(parent, dict):
            parent.pop(path[-1])
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
        else:
            parent[path[-1]] = draw(json_values)
    return document


def one_line_or_success(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2), result.output
    if result.exit_code == 2:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr


def run_recipe_fuzz(examples: int, minimum: int) -> Counter:
    base = json.loads(json.dumps(__import__("yaml").safe_load((REPO / "recipes" / "quickstart.yaml").read_text())))
    seen = Counter()
    folder = Path(tempfile.mkdtemp(prefix="cnncli-fuzz-"))

    @fuzz_settings(examples)
    @given(recipe=mutated(base), as_text=st.booleans(), garbage=st.binary(max_size=64))
    def one_recipe(recipe, as_text, garbage):
        path = folder / "recipe.yaml"
        text = json.dumps(recipe) if isinstance(recipe, dict) and not as_text else repr(recipe)
        path.write_bytes(text.encode("utf-8", "surrogatepass") + (garbage if as_text else b""))
        result = runner.invoke(app, ["train", str(path), "--set", "data.root=/nonexistent/cnncli-fuzz",
                                     "--out", str(folder / "out")])
        one_line_or_success(result)
        assert result.exit_code == 2 and not (folder / "out").exists()  # never reaches the data
        seen["recipe"] += 1

    try:
        one_recipe()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert seen["recipe"] >= minimum
    return seen


def run_bundle_fuzz(examples: int, minimum: int, kind: str) -> Counter:
    folder = Path(tempfile.mkdtemp(prefix="cnncli-fuzz-")) / "bundle"
    shutil.copytree(FIXTURES / kind, folder)
    info = json.loads((folder / "model.json").read_text())
    argument = "a fine film" if kind == "text" else str(sorted((REPO / "sample_data").rglob("*.png"))[0])
    seen = Counter()

    @fuzz_settings(examples)
    @given(document=mutated(info), raw=st.one_of(st.none(), st.binary(max_size=200)))
    def one_document(document, raw):
        content = raw if raw is not None else json.dumps(document).encode("utf-8", "surrogatepass")
        (folder / "model.json").write_bytes(content)
        result = runner.invoke(app, ["predict", str(folder), argument, "--format", "jsonl"])
        one_line_or_success(result)
        try:
            load_bundle(folder)
        except CnncliError:
            pass
        seen["document"] += 1

    try:
        one_document()
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    assert seen["document"] >= minimum
    return seen


def test_three_hundred_hostile_recipes_are_refused_in_one_line_before_any_data():
    run_recipe_fuzz(examples=300, minimum=300)


def test_three_hundred_hostile_model_json_documents_load_or_are_refused_in_one_line():
    run_bundle_fuzz(examples=150, minimum=150, kind="text")
    run_bundle_fuzz(examples=150, minimum=150, kind="image")


@pytest.mark.slow
def test_thousands_of_hostile_recipes_and_model_json_documents():
    run_recipe_fuzz(examples=3000, minimum=3000)
    for kind in ("text", "image", "audio"):
        run_bundle_fuzz(examples=1000, minimum=1000, kind=kind)
