"""Probe q8: concurrent charges on one ledger (separate processes, as Flower runs one ClientApp process per
message). The budget at sigma 1 (max-epsilon 10, delta 1e-5) allows 3 releases; 12 processes race for it.
Also: the release numbers handed out must all differ (seeded noise is keyed by them)."""
import multiprocessing as mp
import os
import sys
import tempfile


def worker(path, q):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
    from ssgd.distributed.flower.privacy import _charge_ledger
    try:
        q.put(("ok", _charge_ledger(path, 1.0, 10.0, 1e-5)[1]))
    except Exception as e:  # noqa: BLE001
        q.put(("refused", type(e).__name__))


if __name__ == "__main__":
    path = os.path.join(tempfile.mkdtemp(), "ledger.json")
    q = mp.Queue()
    ps = [mp.Process(target=worker, args=(path, q)) for _ in range(12)]
    for p in ps:
        p.start()
    res = [q.get() for _ in ps]
    for p in ps:
        p.join()
    nums = sorted(r[1] for r in res if r[0] == "ok")
    print(f"released: {len(nums)} (budget 3), release numbers {nums}, refusals "
          f"{sorted(set(r[1] for r in res if r[0] != 'ok'))}; ledger: {open(path).read()}")
