"""What a command's flags can get wrong before any work starts, each as one line naming the flag.

The commands in cli.py call these first, so that a typo costs nothing: no bundle is loaded, no
data are read, no output is begun.
"""

from __future__ import annotations

from cnncli.errors import CnncliError
from cnncli.files.atomic import check_writable
from cnncli.limits import MAX_BATCH_SIZE


def check_batch_size(batch_size: int) -> None:
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise CnncliError(f"--batch-size {batch_size}: must be from 1 to {MAX_BATCH_SIZE:,}")


def check_prediction_options(top_k: int, batch_size: int | None, window: float | None, hop: float | None,
                             output: str | None) -> None:
    """predict's options that can be wrong before any work: one line naming the flag."""
    if top_k < 1:
        raise CnncliError("--top-k: must be at least 1")
    if batch_size is not None:
        check_batch_size(batch_size)
    if (window is not None and window <= 0) or (hop is not None and (hop <= 0 or window is None)):
        raise CnncliError("--window, --hop: positive seconds, and --hop only with --window")
    if output not in (None, "-"):
        check_writable(output, "--output")


def check_report_options(report, html, layer) -> None:
    """eval: --html and --layer belong to --report (the page shows the report's pictures)."""
    if (html or layer) and not report:
        raise CnncliError(f"{'--html' if html else '--layer'}: give --report DIR too (the page shows its pictures)")


def check_inspect_options(input_file, html, layer, data: bool) -> None:
    """inspect: --html and --layer belong to --input, which looks at one input, not at the data."""
    if (html or layer) and not input_file:
        raise CnncliError(f"{'--html' if html else '--layer'}: applies with --input (or to eval --report)")
    if data and input_file:
        raise CnncliError("--data: not with --input (one looks at the data, the other at one input)")
