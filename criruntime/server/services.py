"""The domain services the servicers call, built once at start-up from the Config."""

from __future__ import annotations

import os
from dataclasses import dataclass

from criruntime.config import Config
from criruntime.image.service import ImageService
from criruntime.sandbox.service import SandboxService
from criruntime.store.db import Database
from criruntime.store.settings import SettingsStore


@dataclass
class Services:
    config: Config
    db: Database
    settings: SettingsStore
    image: ImageService
    sandboxes: SandboxService

    @classmethod
    def open(cls, config: Config) -> Services:
        db = Database(os.path.join(config.root, "criruntime.db"))
        settings = SettingsStore(db)
        return cls(
            config=config,
            db=db,
            settings=settings,
            image=ImageService(config, db),
            sandboxes=SandboxService(config, db, settings),
        )

    async def close(self) -> None:
        await self.image.close()
        self.db.close()
