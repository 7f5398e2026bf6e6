"""`cnncli serve`: bundles answer over HTTP (Starlette on uvicorn, the `serve` extra).

The modules, one job each: `server` binds the socket and runs uvicorn until SIGTERM or ^C (in
flight requests finish, then exit 0); `app` holds the routes; `requests` turns a request into
inputs, within the limits, or a 4xx with a JSON error; `spool` writes uploads to a private
temporary folder for the modality to read (paths named in requests are never read); `batcher`
gathers concurrent requests into one forward pass; `answers` makes rows and Grad-CAM pictures
exactly as predict and inspect do; `metrics` counts in Prometheus's text format, and
`shared_metrics` sums the counts of --workers processes; `page` is the page a person drops an
input on.

Starlette and uvicorn are imported by these modules only, and the command line imports them
only when `serve` runs, so `cnncli --help` stays fast without them.
"""

from __future__ import annotations

import importlib.util

from cnncli.errors import CnncliError

# The serve extra: each package with the names Python imports it by (python-multipart was `multipart`
# before 0.0.13).
NEEDED = {"starlette": ("starlette",), "uvicorn": ("uvicorn",), "python-multipart": ("python_multipart", "multipart")}


def require_extra() -> None:
    """A clear error, before anything loads, where the serve extra is not installed."""
    missing = [package for package, modules in NEEDED.items()
               if not any(importlib.util.find_spec(module) for module in modules)]
    if missing:
        raise CnncliError(f"serve: needs {', '.join(missing)}; install the serve extra: pip install 'cnncli[serve]'")
