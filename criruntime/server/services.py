"""The domain services the servicers call, built once at start-up from the Config."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.config import Config
from criruntime.container.container_events import describe
from criruntime.container.container_stats_list import stats_by_pod
from criruntime.container.service import ContainerService
from criruntime.image.service import ImageService
from criruntime.observability import metrics
from criruntime.oci.selection import RuntimeSet
from criruntime.sandbox.sandbox_status import to_status
from criruntime.sandbox.service import SandboxService
from criruntime.store.db import Database
from criruntime.store.settings import SettingsStore
from criruntime.streaming.cri_runtime import CriStreamRuntime
from criruntime.streaming.server import StreamingServer


@dataclass
class Services:
    config: Config
    db: Database
    settings: SettingsStore
    image: ImageService
    sandboxes: SandboxService
    containers: ContainerService
    streaming: StreamingServer

    @classmethod
    def open(cls, config: Config) -> Services:
        # The default runtime handler is settled first: every service sees it in the config.
        runtimes = RuntimeSet.open(config)
        try:
            config = runtimes.resolve(config)
            db = Database(os.path.join(config.root, "criruntime.db"))
            settings = SettingsStore(db)
            sandboxes = SandboxService(config, db, settings)
            image = ImageService(config, db)
            containers = ContainerService.wired(config, db, sandboxes, image, runtimes)
        except BaseException:
            runtimes.close()  # a start-up that fails leaves no mount behind
            raise
        sandboxes.container_stats = functools.partial(stats_by_pod, containers)

        def pod_status(pod_id: str) -> api.PodSandboxStatus | None:
            sandbox = sandboxes.store.find(pod_id)
            return to_status(sandbox) if sandbox is not None else None

        containers.events.describe = functools.partial(describe, containers, pod_status)
        metrics.count_states(sandboxes.store.count_by_state, containers.store.count_by_state)
        return cls(
            config=config,
            db=db,
            settings=settings,
            image=image,
            sandboxes=sandboxes,
            containers=containers,
            streaming=StreamingServer(config.streaming, CriStreamRuntime(containers, sandboxes)),
        )

    async def close(self) -> None:
        await self.streaming.close()
        self.containers.stop_watching()
        # Finish background reaps of exited containers, so nothing is left half-deleted.
        await self.containers.settle()
        await self.image.close()
        self.db.close()
        self.containers.runtime_set.close()
