"""Probe q6: a privacy-ledger reached through a hard link (the symlink case of red team 2 finding 4 is fixed with
realpath; a hard link has its own real path). The lock is '<real path>.lock' (two different lock files) and the
atomic rename replaces one directory entry, so the two names fork into two ledgers. Node-owner configuration
(two paths to one file), not a server route: low."""
import os
import tempfile

from ssgd.distributed.flower.privacy import _charge_ledger

d = tempfile.mkdtemp()
a, b = os.path.join(d, "ledger.json"), os.path.join(d, "alias.json")
_charge_ledger(a, 1.0, 10.0, 1e-5)  # the ledger exists (1 release)
os.link(a, b)                        # the owner's second name for it (another app's node config)
n = 1
for path in [a, b] * 5:
    try:
        _charge_ledger(path, 1.0, 10.0, 1e-5)
        n += 1
    except Exception as e:  # noqa: BLE001
        print(f"{os.path.basename(path)}: {type(e).__name__}")
print(f"releases made at sigma 1 with max-epsilon 10: {n} (the budget allows 3)")
