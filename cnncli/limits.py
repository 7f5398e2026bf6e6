"""The sane limits: sizes past which an input, a recipe or a bundle is refused before any work.

Each is far beyond what a real run needs and far below what would hang the machine or exhaust
its memory, so a hostile file, a typo (`channels: 1e9`) or a tampered bundle costs one line,
not minutes and gigabytes. docs/RELIABILITY.md lists them; change them here only.
"""

from __future__ import annotations

# Networks (checked on the meta device, before any weight is allocated)
MAX_PARAMETERS = 500_000_000  # 2 GB of float32 weights; an optimiser keeps two more copies
MAX_ACTIVATIONS = 250_000_000  # values the layers output for one sample (1 GB of float32)
MAX_BATCH_ACTIVATIONS = 4_000_000_000  # activations x batch size: 16 GB of float32 per batch
MAX_INPUT_VALUES = 64_000_000  # values of one encoded sample (e.g. 3 x 4618 x 4618 pixels)
MAX_MEMBERS = 100  # networks in an ensemble (train.ensemble, a bundle's members)
MAX_LABELS = 100_000  # classes of a bundle

# Files read as one sample
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold, here an error not a warning
MAX_AUDIO_SECONDS = 1800  # a longer recording is predicted in windows (--window), not whole
MAX_AUDIO_VALUES = 2 ** 27  # decoded frames x channels (512 MB of float32)
AUDIO_RATES = (1000, 768_000)  # plausible native sample rates, Hz
MAX_IMAGE_BYTES = 8 * MAX_IMAGE_PIXELS  # 716 MB: uncompressed 16-bit RGBA at the pixel limit

# Files of text and tables, read whole or a line at a time
MAX_TEXT_BYTES = 1_000_000_000  # a text file, a manifest or a text sample read whole (10 million sentences)
MAX_LINE_BYTES = 1_000_000  # one line of a manifest or of `predict --lines`: a sentence, a path, a JSON row
MAX_IDX_BYTES = 4_000_000_000  # an idx file once decompressed (EMNIST's largest is 0.7 GB)

# Recipes and bundles
MAX_RECIPE_BYTES = 10_000_000  # a recipe or model.json larger than this is not one
MAX_LOG_BYTES = 500_000_000  # a bundle's log.jsonl: about 2 million epoch records (MAX_EPOCHS and more)
MAX_YAML_NODES = 100_000  # nodes of a recipe once its aliases are expanded (a YAML alias bomb)
MAX_EPOCHS = 1_000_000
MAX_STEPS = 10 ** 12
MAX_BATCH_SIZE = 1_000_000
MAX_THREADS = 4096
MAX_SEED = 2 ** 62  # torch seeds are 64-bit; ensemble members add 1000 per member
