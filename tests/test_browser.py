"""The explainer and report pages in a real browser (Debian's chromium, headless), on bundles of
the shipped recipes trained for a short while on their real data: no console error, no request
that leaves the page, and a screenshot with something on it.

    CNNCLI_SCREENSHOTS=docs python -m pytest -m slow tests/test_browser.py

also keeps one explainer screenshot per modality there (docs/explainer-image.png, ...).
"""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SHARED_DATA
from headless_chromium import Chromium, chromium_path
from PIL import Image
from typer.testing import CliRunner

from cnncli.cli.app import app

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium_path() is None, reason="needs chromium (apt-get install -y chromium)")]
runner = CliRunner()
FASHION = Path("/usr/share/datasets/fashion-mnist")

# recipe, --set for a short run, where its data must be, and the input to explain
CASES = {
    "image": ("lecture-3.yaml", ["train.epochs=1"], FASHION / "t10k-images-idx3-ubyte.gz", None),
    "audio": ("fsdd.yaml", ["train.epochs=6"], SHARED_DATA / "fsdd" / "recordings",
              str(SHARED_DATA / "fsdd" / "recordings" / "3_theo_0.wav")),
    "text": ("sst2.yaml", ["train.epochs=3"], SHARED_DATA / "sst2" / "stsa.binary.test",
             "it 's a charming and often affecting journey ."),
}


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def fashion_png(path: Path) -> str:
    """The first Fashion-MNIST test image as a PNG file, as a user would have it."""
    raw = gzip.decompress((FASHION / "t10k-images-idx3-ubyte.gz").read_bytes())
    Image.fromarray(np.frombuffer(raw[16:16 + 784], dtype=np.uint8).reshape(28, 28)).save(path)
    return str(path)


@pytest.fixture(scope="module", params=list(CASES))
def pages(request, tmp_path_factory):
    kind = request.param
    recipe, settings, needed, example = CASES[kind]
    if not needed.exists():
        pytest.skip(f"needs {needed}")
    folder = tmp_path_factory.mktemp(kind)
    bundle = folder / Path(recipe).stem  # the page is headed by the bundle's name
    sets = [item for value in settings + ["train.threads=1"] for item in ("--set", value)]
    trained = cli("train", REPO / "recipes" / recipe, *sets, "--out", bundle, "--format", "json")
    assert trained.exit_code == 0, trained.output
    example = example or fashion_png(folder / "ankle-boot.png")
    explained = cli("inspect", bundle, "--input", example, "--out", folder / "seen", "--html",
                    folder / "explainer.html")
    assert explained.exit_code == 0, explained.output
    report = cli("eval", bundle, "--report", folder / "report", "--html", folder / "report.html",
                 "--format", "json")
    assert report.exit_code == 0, report.output
    assert json.loads((folder / "report" / "metrics.json").read_text()) == json.loads(report.stdout)
    return kind, folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with Chromium(tmp_path_factory.mktemp("chromium-profile")) as chromium:
        yield chromium


@pytest.mark.parametrize("page", ["explainer.html", "report.html"])
def test_the_page_opens_without_errors_or_requests_and_shows_something(pages, browser, page):
    kind, folder = pages
    url = (folder / page).as_uri()
    visit = browser.open(url)
    assert visit.console_errors == []
    outside = [request[:80] for request in visit.requests if request != url and not request.startswith("data:")]
    assert outside == []
    image = Image.open(io.BytesIO(visit.screenshot)).convert("RGB")
    assert image.size == (1280, 2000) and visit.height > 2000  # the page runs on below the screenshot
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 1000 and max(count for count, _ in colours) < 0.8 * image.width * image.height
    keep = os.environ.get("CNNCLI_SCREENSHOTS")
    if keep and page == "explainer.html":
        image.save(Path(keep) / f"explainer-{kind}.png", optimize=True)
