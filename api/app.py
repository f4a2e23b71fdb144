"""The FastAPI application factory."""
from __future__ import annotations

import asyncio
import gc
import importlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.deps import ensure_engine
from api.errors import install_error_handlers
from settings import Settings, get_settings

# Route modules, each exposing `router`. Optional ones are skipped when their module does not exist.
CORE_ROUTERS: list[str] = [
    "api.routes.tenants",
    "api.routes.procedures",
    "api.routes.secrets",
    "api.routes.connectors",
    "api.routes.channels",
]
OPTIONAL_ROUTERS: list[str] = ["api.routes.runs", "api.routes.approvals", "api.routes.conversations",
                                 "api.routes.knowledge", "channels.twilio", "channels.email", "channels.slack",
                                 "channels.meta", "channels.web"]
ROUTERS: list[str] = CORE_ROUTERS + OPTIONAL_ROUTERS


def include_routers(app: FastAPI, names: Sequence[str], optional: Sequence[str] = OPTIONAL_ROUTERS) -> None:
    """Mount each module's `router`; a module in `optional` that does not exist is skipped."""
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name in optional and exc.name == name:
                continue
            raise
        app.include_router(module.router)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    ensure_engine(app)
    # what is loaded by now lives as long as the process: spare it the collector's full passes
    # (each one pauses every request)
    gc.freeze()
    try:
        yield
    finally:
        engine = getattr(app.state, "engine", None)
        if engine is not None:
            engine.dispose()
            app.state.engine = None


def create_app(settings: Settings | None = None, routers: Sequence[str] | None = None) -> FastAPI:
    """Build the API for `settings` (default: the environment's) with the route modules `routers`
    (default ROUTERS). Docs at /docs."""
    app = FastAPI(title="Flywheel", version="1", docs_url="/docs", lifespan=_lifespan)
    app.state.settings = settings or get_settings()
    app.state.engine = None
    app.state.temporal = None
    app.state.temporal_lock = asyncio.Lock()
    app.state.secret_box = None
    install_error_handlers(app)
    include_routers(app, ROUTERS if routers is None else routers)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness probe."""
        return {"status": "ok"}

    return app
