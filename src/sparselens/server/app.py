"""The viewer as an ASGI app: a JSON API over the served dictionaries and a static front end.

`create_app` takes already opened `DictionaryStore`s (and optionally a `ModelRunner`), so
tests and notebooks build it without the CLI. Routes are an explicit table: the page, its
assets by fixed name, and ``/api/...``; anything else is 404. No URL is ever mapped to a file
path, dictionaries are addressed by name, and every response carries a Content Security
Policy that allows only this origin's own scripts (no inline script, no CDN).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sparselens.server import limits as checks
from sparselens.server.comparisons import ServedComparison
from sparselens.server.feature import feature_payload
from sparselens.server.graphs import ServedGraph
from sparselens.server.images import images_script
from sparselens.server.latents import SORTS, latent_list
from sparselens.server.limits import BadRequest, Limits
from sparselens.server.middleware import BodyLimit, SecurityHeaders
from sparselens.server.overview import overview
from sparselens.server.runner import ModelRunner, SteerEdit, Unavailable
from sparselens.server.search import search
from sparselens.server.similar import similar_latents
from sparselens.server.store import DictionaryStore

ASSETS = {"viewer.js": "text/javascript; charset=utf-8",
          "graph.js": "text/javascript; charset=utf-8",
          "compare.js": "text/javascript; charset=utf-8",
          "images.js": "text/javascript; charset=utf-8",
          "viewer.css": "text/css; charset=utf-8"}
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]


def _asset(name: str) -> bytes:
    return resources.files("sparselens.server").joinpath("assets", name).read_bytes()


class Viewer:
    """Route handlers over the served stores (one instance per app)."""

    def __init__(self, stores: Sequence[DictionaryStore], runner: ModelRunner | None,
                 limits: Limits, graphs: Sequence[ServedGraph] = (),
                 comparisons: Sequence[ServedComparison] = ()) -> None:
        names = [s.name for s in stores]
        if len(set(names)) != len(names):
            raise ValueError(f"two served dictionaries share a name: {names}")
        self.stores = {s.name: s for s in stores}
        self.graphs = {g.name: g for g in graphs}
        self.comparisons = {c.name: c for c in comparisons}
        self.runner = runner
        self.limits = limits

    def store(self, name: str) -> DictionaryStore:
        if name not in self.stores:
            raise HTTPException(404, f"no served dictionary is called {name!r}")
        return self.stores[name]

    def latent(self, store: DictionaryStore, latent: int) -> int:
        if not 0 <= latent < store.n_latents:
            raise HTTPException(404, f"{store.name} has latents 0 to {store.n_latents - 1}")
        return latent

    def need_runner(self) -> ModelRunner:
        if self.runner is None:
            raise Unavailable("no model is loaded; start the server with --model")
        return self.runner

    # ---- handlers ----

    async def page(self, request: Request) -> Response:
        return Response(_asset("index.html"), media_type="text/html; charset=utf-8")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise HTTPException(404, "no such asset")
        body = images_script() if name == "images.js" else _asset(name)
        return Response(body, media_type=ASSETS[name])

    async def info(self, request: Request) -> Response:
        return JSONResponse({"dictionaries": [s.describe() for s in self.stores.values()],
                             "model": self.runner.name if self.runner else None,
                             "graphs": list(self.graphs),
                             "comparisons": list(self.comparisons),
                             "limits": vars(self.limits)})

    async def overview(self, request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(overview, list(self.stores.values())))

    async def feature(self, request: Request) -> Response:
        store = self.store(request.path_params["name"])
        latent = self.latent(store, request.path_params["latent"])
        return JSONResponse(await run_in_threadpool(feature_payload, store, latent))

    async def similar(self, request: Request) -> Response:
        store = self.store(request.path_params["name"])
        latent = self.latent(store, request.path_params["latent"])
        found = await run_in_threadpool(similar_latents, store, latent,
                                        list(self.stores.values()))
        return JSONResponse({"similar": found})

    async def latents(self, request: Request) -> Response:
        store = self.store(request.path_params["name"])
        query = request.query_params
        sort = query.get("sort", "density")
        if sort not in SORTS:
            raise BadRequest(f"sort must be one of {list(SORTS)}, got {sort!r}")
        try:
            page, size = int(query.get("page", "0")), int(query.get("size", "25"))
        except ValueError:
            raise BadRequest("page and size must be integers") from None
        if page < 0 or not 1 <= size <= self.limits.max_results:
            raise BadRequest(f"page must be >= 0 and size from 1 to {self.limits.max_results}")
        return JSONResponse(await run_in_threadpool(latent_list, store, sort, page, size,
                                                    query.get("dead") == "1"))

    async def logit_lens(self, request: Request) -> Response:
        store = self.store(request.path_params["name"])
        latent = self.latent(store, request.path_params["latent"])
        runner = self.need_runner()
        return JSONResponse(await run_in_threadpool(runner.logit_lens, store, latent))

    async def graph_list(self, request: Request) -> Response:
        return JSONResponse({"graphs": [g.describe() for g in self.graphs.values()]})

    async def graph(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.graphs:
            raise HTTPException(404, f"no served graph is called {name!r}")
        return JSONResponse(self.graphs[name].data)

    async def comparison_list(self, request: Request) -> Response:
        return JSONResponse({"comparisons": [c.describe() for c in self.comparisons.values()]})

    async def comparison(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.comparisons:
            raise HTTPException(404, f"no served comparison is called {name!r}")
        return JSONResponse(self.comparisons[name].payload(list(self.stores.values())))

    async def search(self, request: Request) -> Response:
        query = request.query_params.get("q", "")
        if len(query) > self.limits.max_query_chars:
            raise BadRequest(f"the query is over {self.limits.max_query_chars} characters")
        wanted = request.query_params.get("d")
        stores = [self.store(wanted)] if wanted else list(self.stores.values())
        results = await run_in_threadpool(search, stores, query, self.limits.max_results)
        return JSONResponse({"query": query, "results": results})

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the request body must be a JSON object") from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        return body

    async def playground(self, request: Request) -> Response:
        body = await self._body(request)
        lim = self.limits
        text = checks.text_field(body, "text", lim.max_text_chars)
        store = self.store(str(body.get("dictionary", "")))
        latent = checks.int_field(body, "latent", 0, store.n_latents - 1)
        runner = self.need_runner()
        return JSONResponse(await _model_call(runner.playground, text, store.name, latent,
                                              lim.max_tokens))

    async def steer(self, request: Request) -> Response:
        body = await self._body(request)
        lim = self.limits
        prompt = checks.text_field(body, "prompt", lim.max_text_chars)
        new_tokens = checks.int_field(body, "max_new_tokens", 1, lim.max_new_tokens, 24)
        raw = body.get("edits")
        if not isinstance(raw, list) or not 1 <= len(raw) <= lim.max_edits:
            raise BadRequest(f"'edits' must be a list of 1 to {lim.max_edits} edits")
        edits = []
        for item in raw:
            if not isinstance(item, dict):
                raise BadRequest("each edit is an object {dictionary, latent, coef}")
            store = self.store(str(item.get("dictionary", "")))
            edits.append(SteerEdit(store.name,
                                   checks.int_field(item, "latent", 0, store.n_latents - 1),
                                   checks.number_field(item, "coef", lim.max_abs_coef)))
        runner = self.need_runner()
        return JSONResponse(await _model_call(runner.steer, prompt, edits, new_tokens))


async def _model_call(function: Any, *args: Any) -> Any:
    """Run a model request in the thread pool; its ValueErrors (too long, out of range) are
    the request's fault and answer 400 with their message."""
    try:
        return await run_in_threadpool(function, *args)
    except ValueError as err:
        raise BadRequest(str(err)) from None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=503)


def create_app(stores: Sequence[DictionaryStore], runner: ModelRunner | None = None,
               limits: Limits | None = None, allowed_hosts: Sequence[str] | None = None,
               graphs: Sequence[ServedGraph] = (),
               comparisons: Sequence[ServedComparison] = ()) -> Starlette:
    """The viewer app. `allowed_hosts` are the Host headers accepted (default: loopback names
    only, which also stops DNS-rebinding pages from reading the API); `graphs` are the
    attribution graphs to serve (`graphs.load_graphs`)."""
    limits = limits or Limits()
    viewer = Viewer(stores, runner, limits, graphs, comparisons)
    routes = [
        Route("/", viewer.page),
        Route("/assets/{name}", viewer.asset),
        Route("/api/info", viewer.info),
        Route("/api/overview", viewer.overview),
        Route("/api/search", viewer.search),
        Route("/api/graphs", viewer.graph_list),
        Route("/api/graphs/{name}", viewer.graph),
        Route("/api/comparisons", viewer.comparison_list),
        Route("/api/comparisons/{name}", viewer.comparison),
        Route("/api/d/{name}/latents", viewer.latents),
        Route("/api/d/{name}/feature/{latent:int}", viewer.feature),
        Route("/api/d/{name}/feature/{latent:int}/similar", viewer.similar),
        Route("/api/d/{name}/feature/{latent:int}/logit-lens", viewer.logit_lens),
        Route("/api/playground", viewer.playground, methods=["POST"]),
        Route("/api/steer", viewer.steer, methods=["POST"]),
    ]
    middleware = [Middleware(SecurityHeaders),
                  Middleware(TrustedHostMiddleware,
                             allowed_hosts=list(allowed_hosts or LOOPBACK_HOSTS)),
                  Middleware(BodyLimit, limit=limits.max_body_bytes)]
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: _http_error, BadRequest: _bad_request,
                                         Unavailable: _unavailable})
