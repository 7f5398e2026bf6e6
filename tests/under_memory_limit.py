"""Run by test_address_space.py in a process whose address space is capped (RLIMIT_AS): every
hostile input of issue 13 through predict and loading, in one process. Prints one line per check
and `survived` at the end; an uncaught exception or a kill fails the test."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

import hostile  # noqa: E402 - after the limit: what these imports map counts too

from cnncli.bundle.io import load_bundle  # noqa: E402
from cnncli.errors import CnncliError  # noqa: E402
from cnncli.modalities import modality_class  # noqa: E402
from cnncli.recipe.config import load_config  # noqa: E402
from cnncli.training.train import check_size  # noqa: E402
from cnncli.verbs.predict import predict  # noqa: E402

folder, recipes, bundles = (Path(argument) for argument in sys.argv[2:5])
fixtures = hostile.REPO / "tests" / "fixtures" / "bundles-v1"
route = {".png": "image", ".jpg": "image", ".wav": "audio", ".flac": "audio", ".mp3": "audio", ".txt": "text",
         ".csv": "text"}
loaded = {kind: load_bundle(fixtures / kind) for kind in ("image", "audio", "text")}
for kind, bundle in loaded.items():
    paths = [str(path) for path in sorted(folder.iterdir()) if route[path.suffix] == kind]
    rows = list(predict(bundle, paths, top_k=1, batch_size=32))
    print(kind, len(paths), "files", len(rows), "rows", sum(row.error is not None for row in rows), "errors",
          flush=True)
for recipe in sorted(recipes.iterdir()):
    try:
        config = load_config(recipe)
        modality = modality_class(config.data.modality).from_config(config)
        check_size(modality, config, classes=2, before_data=True)
        print(recipe.name, "loaded", flush=True)
    except CnncliError as error:
        print(recipe.name, "refused:", str(error)[-80:], flush=True)
for bundle in sorted(bundles.iterdir()):
    try:
        load_bundle(bundle)
        print(bundle.name, "loaded", flush=True)
    except CnncliError as error:
        print(bundle.name, "refused:", str(error)[-80:], flush=True)
print("survived", flush=True)
