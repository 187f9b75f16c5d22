"""SandboxService: the pod lifecycle's wiring, built once at start-up.

The verbs live one per file (sandbox_run.py, sandbox_stop.py, ...) and take this object; it holds
what they share: the store, the cgroup driver, the pod network, per-pod locks, the in-flight
RunPodSandbox calls, and the hooks container code registers to stop and remove a pod's
containers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from criruntime.cgroups.cgroupfs import Cgroupfs
from criruntime.cgroups.host import HostCgroups
from criruntime.cgroups.stats import CpuRates
from criruntime.config import Config
from criruntime.network.cni_executor import InProcessRunner
from criruntime.network.pod_network import PodNetwork
from criruntime.sandbox import user_namespace
from criruntime.sandbox.store import SandboxStore
from criruntime.store.db import Database
from criruntime.store.settings import SettingsStore

if TYPE_CHECKING:
    from criruntime.sandbox.sandbox_stats import ContainerStatsHook

log = logging.getLogger("criruntime.sandbox")

# (pod id, timeout seconds) -> stops the pod's containers / removes them (and their rows).
# Pods whose config names no cgroup_parent get "/criruntime/<id>". The prefix is made once and
# kept, so concurrent pods never race to create and remove it.
DEFAULT_CGROUP_PREFIX = "/criruntime"

PodContainersHook = Callable[[str, float], Awaitable[None]]


@dataclass
class InFlightRun:
    """A RunPodSandbox still working: a retry with the same request waits for it."""

    sandbox_id: str
    request_key: bytes
    task: asyncio.Task[str]


class SandboxService:
    def __init__(
        self,
        config: Config,
        db: Database,
        settings: SettingsStore,
        *,
        cgroupfs: Cgroupfs | None = None,
        in_process: InProcessRunner | None = None,
    ) -> None:
        self.config = config
        self.store = SandboxStore(db)
        self.settings = settings
        self.cgroupfs = cgroupfs or Cgroupfs.detect()
        self.host_cgroups = HostCgroups.detect(
            self.cgroupfs, config.cgroups.tolerate_missing_hugetlb_controller
        )
        self.network = PodNetwork(
            config.cni,
            os.path.join(config.root, "cni"),
            settings,
            in_process=in_process or _own_plugins(),
        )
        try:
            self.cgroupfs.create(DEFAULT_CGROUP_PREFIX)
        except OSError as e:
            log.warning("cannot create the default pod cgroup parent: %s", e)
        self.sandboxes_dir = os.path.join(config.state, "sandboxes")
        os.makedirs(self.sandboxes_dir, mode=0o711, exist_ok=True)
        self.in_flight: dict[str, InFlightRun] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Set by the container service; None while there is no container code.
        self.stop_containers: PodContainersHook | None = None
        self.remove_containers: PodContainersHook | None = None
        self.container_stats: ContainerStatsHook | None = None
        self.cpu_rates = CpuRates()  # the previous CPU sample of each pod cgroup
        self._recovery: asyncio.Task[None] | None = None
        # Whether pods may have user namespaces here: probed once, off the start-up path.
        self._userns_probe: concurrent.futures.Future[str] = concurrent.futures.Future()
        threading.Thread(
            target=self._probe_user_namespaces, name="userns-probe", daemon=True
        ).start()
        with contextlib.suppress(RuntimeError):  # no loop: the first verb starts recovery
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        from criruntime.sandbox.restart import recover  # restart.py builds on the verbs

        try:
            await recover(self)
        except Exception:
            log.exception("sandbox recovery after restart failed")

    async def ensure_recovered(self) -> None:
        """Pods left by the previous daemon are reconciled before any verb changes a pod."""
        if self._recovery is None:
            self._recovery = asyncio.get_running_loop().create_task(self._recover())
        await asyncio.shield(self._recovery)

    def _probe_user_namespaces(self) -> None:
        try:
            why_not = user_namespace.probe(os.path.join(self.config.root, "userns-probe"))
        except Exception as e:  # whatever it was, the answer is no; never leave it unset
            why_not = f"the probe failed: {e}"
        if why_not:
            log.warning("pods with user namespaces are refused on this host: %s", why_not)
        self._userns_probe.set_result(why_not)

    def user_namespaces_unsupported(self) -> str:
        """ "" when this host can run pods with user namespaces, else why not."""
        return self._userns_probe.result()

    def user_namespaces_supported(self, handler: str) -> bool:
        runtime = self.config.runtimes.get(handler or self.config.default_runtime)
        return runtime is not None and not self.user_namespaces_unsupported()

    def bundle_dir(self, sandbox_id: str) -> str:
        return os.path.join(self.sandboxes_dir, sandbox_id)

    @contextlib.asynccontextmanager
    async def locked(self, sandbox_id: str) -> AsyncIterator[None]:
        """Serialises Stop/Remove/recovery of one pod."""
        async with self._locks.setdefault(sandbox_id, asyncio.Lock()):
            yield

    def forget_lock(self, sandbox_id: str) -> None:
        """After removal: a caller still waiting on the old lock then finds no pod."""
        self._locks.pop(sandbox_id, None)


def _own_plugins() -> InProcessRunner | None:
    """The project's CNI plugins (cni/) run in-process when that package offers it."""
    try:
        from criruntime.network.in_process import OwnPlugins
    except ImportError:
        return None
    return OwnPlugins.load()
