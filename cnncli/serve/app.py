"""The routes of `cnncli serve`, as one Starlette application.

    GET  /                         the page: drop an input, see the top classes and Grad-CAM
    GET  /health                   {"status": "ok", "models": [...]}
    GET  /metrics                  Prometheus text
    GET  /models, /models/NAME     labels, preprocessing, calibration, metrics (model.json)
    POST /predict, /models/NAME/predict   rows as `predict --format json` writes them
    POST /explain, /models/NAME/explain   Grad-CAM as PNG (?format=png), JSON, or the explainer page

Every answer to a request the server cannot serve is a 4xx with {"error": "..."} naming what is
wrong; an input that cannot be decoded is a row with its error, as predict gives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from cnncli.errors import CnncliError
from cnncli.files.jsontext import dumps
from cnncli.serve.answers import (
    Staged,
    explained_json,
    explainer_html,
    gradcam_picture,
    json_rows,
    prediction_header,
    segment_rows,
)
from cnncli.serve.balance import Balance
from cnncli.serve.batcher import Batcher
from cnncli.serve.metrics import Metrics
from cnncli.serve.models import Model
from cnncli.serve.page import POLICY, home_page
from cnncli.serve.requests import RequestError, query_options, read_inputs
from cnncli.serve.settings import Settings
from cnncli.serve.shared_metrics import SharedMetrics
from cnncli.serve.spool import Spool, Upload

DECODERS = 2  # threads that run segment and explain work off the event loop
JSON = "application/json"


class Service:
    """The models, the batchers, the metrics; its methods are the routes. `metrics_folder`: where
the --workers processes share their counters (None: this process is the whole server)."""

    def __init__(self, models: dict[str, Model], settings: Settings, metrics_folder: Path | None = None):
        self.models, self.settings = models, settings
        self.metrics = Metrics(list(models), settings.max_batch)
        self.balance: Balance | None = None
        self.shared: SharedMetrics | None = None
        if metrics_folder is not None:  # --workers: counters shared, busy connections kept even
            self.balance = Balance()
            self.shared = SharedMetrics(metrics_folder, self.metrics, self.balance)
        self.infos = {name: model.info() for name, model in models.items()}
        self.spool: Spool | None = None
        self.decoders: ThreadPoolExecutor | None = None
        self.batchers: dict[str, Batcher] = {}

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        """Start a batcher per model; at shutdown (after the last request) stop them and clean up."""
        self.spool, self.decoders = Spool(), ThreadPoolExecutor(DECODERS, thread_name_prefix="decode")
        self.batchers = {name: Batcher(model, self.spool, self.metrics, self.settings.max_batch,
                                       self.settings.max_wait_ms, inline=model.predictor.device.type == "cpu")
                         for name, model in self.models.items()}
        for batcher in self.batchers.values():
            batcher.start()
        publishing = asyncio.get_running_loop().create_task(self.shared.publish_every()) if self.shared else None
        try:
            yield
        finally:
            for batcher in self.batchers.values():
                await batcher.stop()
            self.decoders.shutdown(wait=True)
            self.spool.close()
            if publishing is not None:
                publishing.cancel()
                await asyncio.gather(publishing, return_exceptions=True)
                self.shared.publish()

    def application(self) -> Starlette:
        routes = [Route("/", self.timed("/", self.home), methods=["GET"]),
                  Route("/health", self.timed("/health", self.health), methods=["GET"]),
                  Route("/metrics", self.timed("/metrics", self.prometheus), methods=["GET"]),
                  Route("/models", self.timed("/models", self.listing), methods=["GET"]),
                  Route("/models/{name}", self.timed("/models/{name}", self.describe), methods=["GET"]),
                  Route("/predict", self.timed("/predict", self.predict), methods=["POST"]),
                  Route("/models/{name}/predict", self.timed("/models/{name}/predict", self.predict),
                        methods=["POST"]),
                  Route("/explain", self.timed("/explain", self.explain), methods=["POST"]),
                  Route("/models/{name}/explain", self.timed("/models/{name}/explain", self.explain),
                        methods=["POST"])]
        return Starlette(routes=routes, lifespan=self.lifespan,
                         exception_handlers={HTTPException: self.unrouted})

    def timed(self, route: str, handler):
        """`handler` counted in the metrics, its refusals answered as JSON errors."""

        async def answer(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await handler(request)
            except RequestError as error:
                response = refusal(error.status, str(error), {"Connection": "close"} if error.close else None)
            except CnncliError as error:  # the input itself cannot be explained (an undecodable file, a --layer)
                response = refusal(422, str(error))
            self.metrics.request(route, response.status_code, time.perf_counter() - started)
            if self.balance is not None and self.balance.closes(request.scope.get("client")):
                response.headers["Connection"] = "close"
            return response

        return answer

    async def unrouted(self, request: Request, error: HTTPException) -> Response:
        """No such route (404) or method (405): the same JSON errors as everything else."""
        self.metrics.request("unmatched", error.status_code, 0.0)
        message = {404: f"no route {request.url.path!r} (see GET / for the page, GET /models for the models)",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(error.status_code, error.detail)
        return refusal(error.status_code, message, error.headers)

    async def home(self, request: Request) -> Response:
        return HTMLResponse(home_page(list(self.infos.values())), headers={"Content-Security-Policy": POLICY})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": list(self.models)})

    async def prometheus(self, request: Request) -> Response:
        text = self.shared.text() if self.shared else self.metrics.text()
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def listing(self, request: Request) -> Response:
        return Response(dumps({"models": list(self.infos.values())}, "GET /models"), media_type=JSON)

    async def describe(self, request: Request) -> Response:
        return Response(dumps(self.infos[self.model(request).name], "GET /models/NAME"), media_type=JSON)

    async def predict(self, request: Request) -> Response:
        model = self.model(request)
        options = query_options(request, ("top_k", "threshold", "segment"))
        if options.segment and not model.modality.finds_spans:
            raise RequestError(400, f"segment=true: {model.name} reads {model.modality.name} inputs, which cannot be "
                                    "cut into events")
        uploads = await read_inputs(request, model.modality, self.settings)
        if options.segment:
            rows = await self.off_loop(model, uploads, segment_rows, options.top_k, options.threshold)
        else:
            rows = await self.batchers[model.name].predict(uploads, options.top_k, options.threshold)
        return Response(json_rows(rows), media_type=JSON)

    async def explain(self, request: Request) -> Response:
        model = self.model(request)
        options = query_options(request, ("format", "layer", "top_k", "threshold"))
        uploads = await read_inputs(request, model.modality, self.settings)
        if len(uploads) != 1:
            raise RequestError(400, f"explain takes one input, got {len(uploads)}")
        row = (await self.batchers[model.name].predict(uploads, options.top_k, options.threshold))[0]
        if row.error:
            raise RequestError(422, row.error)
        if options.format == "html":
            page = await self.off_loop(model, uploads, explainer_html, options.layer)
            return HTMLResponse(page)
        png, described = await self.off_loop(model, uploads, gradcam_picture, options.layer)
        if options.format == "json":
            return Response(dumps(explained_json(row, png, described), "the explanation"), media_type=JSON)
        return Response(png, media_type="image/png", headers={"X-Cnncli-Prediction": prediction_header(row)})

    async def off_loop(self, model: Model, uploads: list[Upload], work, *arguments):
        """`work(model, staged, *arguments)` on a decoding thread, the uploads spooled for it."""

        def run():
            staged = Staged.of(uploads, self.spool)
            try:
                return work(model, staged, *arguments)
            finally:
                staged.done()

        return await asyncio.get_running_loop().run_in_executor(self.decoders, run)

    def model(self, request: Request) -> Model:
        """The model a request names (/models/NAME/...), or the only one served."""
        name = request.path_params.get("name")
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise RequestError(400, f"serving {len(self.models)} models ({', '.join(self.models)}): "
                                    f"POST to /models/NAME{request.url.path}")
        if name not in self.models:
            raise RequestError(404, f"unknown model {name!r} (serving: {', '.join(self.models)})")
        return self.models[name]


def refusal(status: int, message: str, headers: dict | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
