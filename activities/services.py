"""What activities need from the outside world, built once per worker process."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from sqlalchemy.engine import Engine

from db.engine import make_engine, run_in_session
from security.links import LinkSigner
from security.secrets import SecretBox
from settings import Settings

R = TypeVar("R")


@dataclass
class Services:
    settings: Settings
    engine: Engine
    box: SecretBox
    signer: LinkSigner

    @classmethod
    def from_settings(cls, settings: Settings) -> "Services":
        return cls(settings=settings,
                   engine=make_engine(settings.resolved_database_url()),
                   box=SecretBox.from_setting(settings.secret_keys),
                   signer=LinkSigner(settings.link_secret))

    async def db(self, fn: Callable[..., R], *args: Any) -> R:
        """Run `fn(session, *args)` in a thread (the DB driver is synchronous)."""
        return await run_in_session(self.engine, fn, *args)
