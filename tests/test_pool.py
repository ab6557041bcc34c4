"""The runtime pool: no two requests share an instance; a lone request gets the many-thread solo instance."""

import itertools
import threading
import time

import pytest

from edge_core.errors import EdgeError, RequestError
from edge_core.pool import RuntimePool
from edge_core.service import ServiceOptions
from edge_server.errors import http_status


class Fake:
    ids = itertools.count()

    def __init__(self, kind):
        self.kind, self.id, self.users = kind, next(Fake.ids), 0


def pool(size=2, solo=True):
    return RuntimePool(lambda: Fake("pooled"), size, (lambda: Fake("solo")) if solo else None)


def test_a_lone_request_gets_the_solo_instance_and_company_gets_the_pool():
    p = pool()
    with p.acquire() as first:
        assert first.kind == "solo"
        with p.acquire() as second, p.acquire() as third:
            assert second.kind == third.kind == "pooled" and second is not third
    with p.acquire() as again:
        assert again is first


def test_the_solo_instance_waits_while_others_run():
    p = pool()
    a = p.acquire()
    assert a.__enter__().kind == "solo"
    with p.acquire() as b:
        a.__exit__(None, None, None)  # the solo instance is free again, but b still runs
        with p.acquire() as c:
            assert c.kind == "pooled" and c is not b


def test_no_instance_is_ever_used_by_two_requests_at_once():
    p = pool(size=3)
    overlaps, used = [], set()

    def client():
        for _ in range(200):
            with p.acquire() as inst:
                inst.users += 1
                used.add(inst.kind)
                if inst.users != 1:
                    overlaps.append(inst.id)
                time.sleep(0)
                inst.users -= 1

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert "pooled" in used


def test_a_pool_busy_past_the_timeout_answers_503():
    p = pool(size=1, solo=False)
    with p.acquire():
        with pytest.raises(RequestError) as e:
            with p.acquire(timeout=0.05):
                pass
    assert http_status(e.value) == 503


@pytest.mark.parametrize("options, expected", [
    (ServiceOptions(), (2, 1, 2)),  # 2 cores: two 1-thread instances, and a 2-thread solo one
    (ServiceOptions(threads=2), (2, 2, 0)),  # a solo instance with no more threads than the pool is no use
    (ServiceOptions(solo_threads=0), (2, 1, 0)),
    (ServiceOptions(pool_size=1, solo_threads=3), (1, 2, 3)),
    (ServiceOptions(onnx_providers=("CUDAExecutionProvider", "CPUExecutionProvider")), (2, 1, 0)),
])
def test_pool_defaults_on_two_cores(monkeypatch, options, expected):
    monkeypatch.setattr("edge_core.service.usable_cores", lambda: 2)
    assert options.resolved() == expected


def test_negative_solo_threads_is_a_clear_error():
    with pytest.raises(EdgeError, match="Expected --solo-threads of 0 \\(none\\) or more. Received: -1"):
        ServiceOptions(solo_threads=-1).resolved()


def test_a_request_still_decoding_counts_as_company():
    p = pool()
    with p.track():  # another request, decoding: it holds no instance yet
        with p.track(), p.acquire() as inst:
            assert inst.kind == "pooled"
    with p.track(), p.acquire() as inst:
        assert inst.kind == "solo"


def test_cores_are_the_ones_this_process_may_use():
    import os

    from edge_core.service import usable_cores

    assert usable_cores() == len(os.sched_getaffinity(0)) <= (os.cpu_count() or 1)
