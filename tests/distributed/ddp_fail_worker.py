"""A torchrun worker for the launcher tests: rank 1 fails with a recognisable error, rank 0 would wait forever.

Run only through ``ssgd.distributed.launch.launch`` (tests/distributed/test_ddp.py)."""

import os
import time

from torch.distributed.elastic.multiprocessing.errors import record

__all__ = ["main"]


@record
def main() -> None:
    rank = int(os.environ["RANK"])
    if rank == 1:
        raise ValueError("ddp_fail_worker: rank 1 broke on purpose")
    time.sleep(120)  # rank 0 must be stopped by torchrun, not finish on its own


if __name__ == "__main__":
    main()
