"""Stream* pages: every item once, in order, each page within the byte budget."""

from __future__ import annotations

from criruntime.api.runtime.v1 import api_pb2 as api
from criruntime.server.paging import pages


def pod(i: int, size: int) -> api.PodSandbox:
    return api.PodSandbox(id=f"{i:064x}", annotations={"a": "x" * size})


def test_pages_fit_the_budget_and_keep_order() -> None:
    items = [pod(i, 300) for i in range(50)]
    out = list(pages(items, budget=2000))
    assert [p.id for page in out for p in page] == [p.id for p in items]
    assert all(page for page in out)
    for page in out:
        assert api.StreamPodSandboxesResponse(pod_sandboxes=page).ByteSize() <= 2000
    assert len(out) > 1


def test_an_oversized_item_gets_its_own_page_and_nothing_gives_no_page() -> None:
    big, small = pod(1, 5000), pod(2, 10)
    assert list(pages([small, big, small], budget=1000)) == [[small], [big], [small]]
    assert list(pages([], budget=1000)) == []
