"""The lease in object storage, against SeaweedFS: conditional writes, waiting, expiry, takeover, fencing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from include.audit import lake as lk
from include.audit.leases import LeaseLost, ObjectLease
from include.audit.storage import Root

pytestmark = pytest.mark.s3


@pytest.fixture
def lake(s3_prefix: str) -> Root:
    return Root.open(f"{s3_prefix}/lake")


def test_conditional_writes(lake: Root) -> None:
    path = lake.join("_state", "probe.json")
    assert lake.etag(path) is None
    first = lake.create_if_absent(path, b"1")
    assert first and lake.create_if_absent(path, b"2") is None
    assert lake.replace_if(path, b"3", '"0123456789abcdef0123456789abcdef"') is None
    second = lake.replace_if(path, b"4", first)
    assert second and second != first and lake.read_bytes(path) == b"4"
    assert lake.delete_if(path, first) is False and lake.exists(path)
    assert lake.delete_if(path, second) is True and lake.etag(path) is None


def test_exactly_one_of_many_takes_it(lake: Root) -> None:
    leases = [ObjectLease(lake, lake.join("_state", "race.lease"), ttl=30, wait_seconds=0) for _ in range(6)]

    def take(lease: ObjectLease) -> bool:
        try:
            lease.acquire()
            return True
        except lk.LeaseHeld:
            return False

    with ThreadPoolExecutor(6) as pool:
        won = list(pool.map(take, leases))
    assert won.count(True) == 1
    leases[won.index(True)].release()
    assert lake.etag(lake.join("_state", "race.lease")) is None


def test_second_writer_waits_then_proceeds(lake: Root) -> None:
    order: list[str] = []
    first_holds, second_tried = threading.Event(), threading.Event()

    def first() -> None:
        with lk.lease(lake, ttl_seconds=10):
            order.append("first acquired")
            first_holds.set()
            second_tried.wait(30)
            order.append("first released")

    def second() -> None:
        first_holds.wait(30)
        second_tried.set()
        with lk.lease(lake, ttl_seconds=10, wait_seconds=60):
            order.append("second acquired")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert order == ["first acquired", "first released", "second acquired"]


def test_crashed_holder_expires_and_is_fenced_out(lake: Root) -> None:
    path = lake.join("_state", "ingest.lease")
    crashed = ObjectLease(lake, path, ttl=2, wait_seconds=0)
    crashed.acquire()
    crashed._stop.set()  # the holder stops renewing, as a killed or cut-off process would
    crashed._thread.join()

    successor = ObjectLease(lake, path, ttl=2, wait_seconds=30)
    successor.acquire()  # waits until the lease stayed unchanged for a whole TTL, then takes it over
    successor.fence()
    with pytest.raises(LeaseLost):
        crashed.renew()
    with pytest.raises(LeaseLost):
        crashed.fence()
    crashed.release()  # must not delete the successor's lease
    assert lake.etag(path) == successor.etag
    successor.release()
    assert lake.etag(path) is None


def test_a_waiter_gives_up_after_its_wait(lake: Root) -> None:
    with lk.lease(lake, ttl_seconds=30):
        with pytest.raises(lk.LeaseHeld, match="still holds"):
            with lk.lease(lake, ttl_seconds=30, wait_seconds=1):
                pass
