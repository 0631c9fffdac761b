"""A short flood against a real server: the largest requests the limits allow, from several clients at once, get
answers (no 5xx, no dropped connection), memory stays bounded, and the service still answers correctly afterwards.
The full 8-client, 20 s run with its latency figures is `python -m bench.flood` (docs/benchmarks.md)."""
import pytest

from bench.flood import run_flood, verdicts


@pytest.mark.slow
def test_a_flood_of_the_largest_requests_leaves_the_service_working(tmp_path):
    r = run_flood(clients=4, seconds=6, work=tmp_path)
    v = verdicts(r)
    assert sum(r['statuses'].values()) >= 4, r  # every client got answers
    assert v['no 5xx'] and v['peak RSS < 1.5 GB'] and v['a normal search afterwards finds its image'], r
    assert r['request_pixels'] <= 16_000_000 and r['files_per_request'] == 64
