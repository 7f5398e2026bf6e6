"""`cnncli serve`: parse, call cnncli.serve, print where it listens. Registered by cnncli.cli.app;
a module of its own because the command's options alone would push app.py past its length."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from cnncli.errors import CnncliError


def serve(
    bundles: List[Path] = typer.Argument(..., help="Bundle folders; each is served under its folder's name."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every network; think first)."),
    port: int = typer.Option(8000, help="Port to listen on (0: any free one)."),
    workers: int = typer.Option(0, "--workers", help="Server processes, each with the models and its own batcher "
                                                     "[default: 0, one per core on the CPU, one on a GPU]."),
    max_batch: int = typer.Option(64, "--max-batch", help="Inputs of concurrent requests gathered into one "
                                                          "forward pass."),
    max_wait_ms: float = typer.Option(20.0, "--max-wait-ms", help="While a batch is in the network, how long the "
                                                                  "next may wait for it to end, gathering inputs, "
                                                                  "before it starts alongside (an idle server never "
                                                                  "waits)."),
    max_body_mb: float = typer.Option(16.0, "--max-body-mb", help="Larger request bodies get 413."),
    max_inputs: int = typer.Option(256, "--max-inputs", help="More inputs in one request get 413."),
    read_timeout: float = typer.Option(30.0, "--read-timeout", help="Seconds a request body may take to arrive "
                                                                    "(408 beyond)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    threads: int = typer.Option(0, "--threads", help="Torch threads of each process's forward passes "
                                                     "[default: the cores shared among --workers]."),
):
    """Answer predictions over HTTP (needs the serve extra).

    With dynamic batching, a page at / that shows the top classes and Grad-CAM, and Prometheus metrics.
    SIGTERM or ^C: finish what is in flight, then exit 0.

    Examples:

      cnncli serve runs/x                          # http://127.0.0.1:8000/

      curl -s --data-binary @digit.png -H 'Content-Type: image/png' localhost:8000/predict

      curl -s -F file=@a.png -F file=@b.png 'localhost:8000/predict?top_k=3'

      cnncli serve runs/mnist runs/sst2 --port 9000   # POST /models/sst2/predict
    """
    from cnncli.serve import require_extra

    require_extra()
    from cnncli.serve.server import serve as run_server
    from cnncli.serve.settings import Settings

    settings = Settings(host, port, workers, max_batch, max_wait_ms, max_body_mb, max_inputs, read_timeout, device,
                        threads)
    missing = [str(bundle) for bundle in bundles if not Path(bundle).is_dir()]
    if missing:
        raise CnncliError(f"serve: no bundle folder at {', '.join(missing)}")
    run_server(list(bundles), settings, announce)


def announce(address: str, names: list[str]) -> None:
    typer.echo(f"serving {', '.join(names)} at {address} (^C to stop)")
