"""The mpi4py.futures peer of the `mpi.*` bench cases (`cargo xtask bench`).

Run as rank 0 and workers of one job, as mpi4py.futures wants:

    mpiexec -n 2 --mca btl tcp,self python -m mpi4py.futures bench_mpi4py.py seed LEN ROUNDS
    mpiexec -n 2 --mca btl tcp,self python -m mpi4py.futures bench_mpi4py.py tiny TASKS ROUNDS

Prints one `seed_ms X` or `tiny_us X` line per timed round (round 0 is the
warm-up), the same lines npshmex-mpi's example `seed_mpi` prints. The seed
is `x + 1` over LEN float64 (numpy), checked element by element outside the
timing; tiny is `n + 1`, submitted and awaited one at a time.
"""

import sys
import time

import numpy as np
from mpi4py.futures import MPIPoolExecutor


def add_one(x):
    return x + 1.0


def plus_one(n):
    return n + 1


def main():
    what, size, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with MPIPoolExecutor() as ex:
        # The pool starts lazily: one task before anything is timed.
        assert ex.submit(plus_one, 1).result() == 2
        if what == "seed":
            x = np.full(size, 1.5)
            for r in range(rounds + 1):
                t = time.perf_counter()
                y = ex.submit(add_one, x).result()
                ms = (time.perf_counter() - t) * 1e3
                if y.shape != (size,) or not (y == 2.5).all():
                    raise SystemExit("wrong result of x + 1")
                if r:
                    print(f"seed_ms {ms:.3f}", flush=True)
        elif what == "tiny":
            for r in range(rounds + 1):
                t = time.perf_counter()
                for i in range(size):
                    if ex.submit(plus_one, i).result() != i + 1:
                        raise SystemExit("wrong result of n + 1")
                us = (time.perf_counter() - t) * 1e6 / size
                if r:
                    print(f"tiny_us {us:.2f}", flush=True)
        else:
            raise SystemExit(f"unknown case {what}")


if __name__ == "__main__":
    main()
