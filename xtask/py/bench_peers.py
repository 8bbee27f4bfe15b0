"""The Python peers of `cargo xtask bench` (see BENCHMARKS.md).

Run by the xtask inside its virtualenv, one case per process:

    python bench_peers.py CASE [--quick] [--cores N] [--cgroup DIR]

and prints one JSON line: {"case": CASE, "unit": U, "samples": [...]} or
{"case": CASE, "absent": REASON}. One process per case because importing
npshmex patches concurrent.futures globally (its Future unpacks shm keys),
which must not touch the stdlib measurement.
"""

import argparse
import json
import os
import sys
import time

SEED_LEN = 20_000_000
QUICK_SEED_LEN = 2_000_000


# --- worker functions (top level: ProcessPoolExecutor pickles them by name) ---

def add_one(x):
    return x + 1.0


def plus_one(n):
    return n + 1


def sharedarray_add_one(names):
    """Attach the input, allocate the result in shm, write x + 1 into it."""
    import numpy as np
    import SharedArray

    src, dst = names
    x = SharedArray.attach("shm://" + src)
    out = SharedArray.create("shm://" + dst, x.shape, dtype=x.dtype)
    np.add(x, 1.0, out=out)
    del x, out
    return dst


# --- helpers ---

def repeat(runs, warmup, one):
    for _ in range(warmup):
        one()
    return [one() for _ in range(runs)]


def check(y, expected, n):
    if len(y) != n or y[0] != expected or y[n // 2] != expected or y[-1] != expected:
        raise SystemExit(f"wrong result: len {len(y)}, y[0] = {y[0]}")


class Meter:
    """The memory cgroup this process was moved into by the bench parent
    (see xtask/src/bench/cgroup.rs): usage just before a call, peak during
    it. cgroup v1 (memory.usage_in_bytes / memory.max_usage_in_bytes) or v2
    (memory.current / memory.peak)."""

    def __init__(self, d):
        if os.path.exists(os.path.join(d, "memory.max_usage_in_bytes")):
            self.v1 = True
            self.usage = os.path.join(d, "memory.usage_in_bytes")
            peak = os.path.join(d, "memory.max_usage_in_bytes")
        elif os.path.exists(os.path.join(d, "memory.peak")):
            self.v1 = False
            self.usage = os.path.join(d, "memory.current")
            peak = os.path.join(d, "memory.peak")
        else:
            raise SystemExit(f"{d} is no memory cgroup")
        with open(os.path.join(d, "cgroup.procs")) as f:
            if str(os.getpid()) not in f.read().split():
                raise SystemExit(f"process {os.getpid()} is not in {d}")
        # Kept open: on v2 a reset holds for the fd that wrote it.
        self.peak_fd = os.open(peak, os.O_RDWR)

    def _read(self, fd):
        return int(os.pread(fd, 64, 0).decode().strip())

    def start(self):
        """Resets the peak to the current usage and returns that usage."""
        try:
            os.pwrite(self.peak_fd, b"0" if self.v1 else b"reset", 0)
        except OSError:
            if self.v1:
                raise
            # v2 before Linux 6.12: the peak counts from the group's creation
        fd = os.open(self.usage, os.O_RDONLY)
        try:
            return self._read(fd)
        finally:
            os.close(fd)

    def peak(self):
        return self._read(self.peak_fd)


def wait_for_go():
    """The bench parent sends `go` once this process sits in its cgroup."""
    line = sys.stdin.readline()
    if line.strip() != "go":
        raise SystemExit(f"expected `go` from the bench parent, got {line!r}")


# --- cases ---

def seed_with(executor, a, np):
    """The seed workload through `executor(1)`: a ProcessPoolExecutor class."""
    x = np.full(a.n, 1.5)
    with executor(1) as ex:
        def one():
            t = time.perf_counter()
            y = ex.submit(add_one, x).result()
            dt = (time.perf_counter() - t) * 1e3
            check(y, 2.5, a.n)
            return dt
        return "ms", repeat(a.runs, a.warmup, one)


def seed_stdlib(a, np):
    from concurrent.futures import ProcessPoolExecutor

    return seed_with(ProcessPoolExecutor, a, np)


def seed_npshmex(a, np):
    import npshmex

    return seed_with(npshmex.ProcessPoolExecutor, a, np)


def mem_with(executor, a, np):
    """One seed call through `executor(1)` inside the cgroup a.cgroup, after
    the setup (worker up, input made): (peak - usage before) / array size."""
    if a.cgroup is None:
        raise SystemExit("mem.* cases run only with --cgroup DIR (made by the bench parent)")
    wait_for_go()
    meter = Meter(a.cgroup)
    x = np.full(a.n, 1.5)
    with executor(1) as ex:
        if ex.submit(plus_one, 1).result() != 2:
            raise SystemExit("warm-up task failed")
        before = meter.start()
        y = ex.submit(add_one, x).result()
        peak = meter.peak()
        check(y, 2.5, a.n)
    if peak <= before:
        raise SystemExit(f"the cgroup saw nothing added (peak {peak}, before {before})")
    return "x", [(peak - before) / x.nbytes]


def mem_npshmex(a, np):
    import npshmex

    return mem_with(npshmex.ProcessPoolExecutor, a, np)


def mem_stdlib(a, np):
    from concurrent.futures import ProcessPoolExecutor

    return mem_with(ProcessPoolExecutor, a, np)


def seed_sharedarray(a, np):
    """The input already lives in shm (like seed.pool_zero_copy); the worker
    allocates its result in shm, the caller attaches it."""
    import SharedArray
    from concurrent.futures import ProcessPoolExecutor

    src = f"npshmex-bench-in-{os.getpid()}"
    x = SharedArray.create("shm://" + src, a.n)
    x[:] = 1.5
    counter = [0]
    try:
        with ProcessPoolExecutor(1) as ex:
            def one():
                counter[0] += 1
                dst = f"npshmex-bench-out-{os.getpid()}-{counter[0]}"
                t = time.perf_counter()
                name = ex.submit(sharedarray_add_one, (src, dst)).result()
                y = SharedArray.attach("shm://" + name)
                dt = (time.perf_counter() - t) * 1e3
                SharedArray.delete(name)
                check(y, 2.5, a.n)
                return dt
            return "ms", repeat(a.runs, a.warmup, one)
    finally:
        SharedArray.delete(src)


def seed_ray(a, np):
    import ray

    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        @ray.remote
        def ray_add_one(x):
            return x + 1.0

        x = np.full(a.n, 1.5)
        ref = ray.put(x)

        def one():
            t = time.perf_counter()
            y = ray.get(ray_add_one.remote(ref))
            dt = (time.perf_counter() - t) * 1e3
            check(y, 2.5, a.n)
            return dt
        return "ms", repeat(a.runs, a.warmup, one)
    finally:
        ray.shutdown()


def tiny_roundtrip(a, np):
    from concurrent.futures import ProcessPoolExecutor

    n = a.roundtrips
    with ProcessPoolExecutor(1) as ex:
        def one():
            t = time.perf_counter()
            for i in range(n):
                if ex.submit(plus_one, i).result() != i + 1:
                    raise SystemExit("wrong result")
            return (time.perf_counter() - t) * 1e6 / n
        return "µs", repeat(a.runs, a.warmup, one)


def tiny_throughput(a, np):
    from concurrent.futures import ProcessPoolExecutor

    n = a.tasks
    with ProcessPoolExecutor(a.cores) as ex:
        def one():
            t = time.perf_counter()
            futs = [ex.submit(plus_one, i) for i in range(n)]
            for i, f in enumerate(futs):
                if f.result() != i + 1:
                    raise SystemExit("wrong result")
            return n / (time.perf_counter() - t)
        return "tasks/s", repeat(a.runs, a.warmup, one)


CASES = {
    "seed.py_stdlib": seed_stdlib,
    "seed.py_npshmex": seed_npshmex,
    "seed.py_sharedarray": seed_sharedarray,
    "seed.py_ray": seed_ray,
    "py.tiny_roundtrip": tiny_roundtrip,
    "py.tiny_throughput": tiny_throughput,
    "mem.py_npshmex_peak": mem_npshmex,
    "mem.py_stdlib_peak": mem_stdlib,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--cgroup", default=None,
                   help="mem.* cases: the memory cgroup this process is moved into")
    a = p.parse_args()
    a.n = QUICK_SEED_LEN if a.quick else SEED_LEN
    a.runs, a.warmup = (1, 0) if a.quick else (5, 1)
    a.roundtrips = 200 if a.quick else 2_000
    # Python's pool manages ~10k tasks/s: the rate does not depend on the
    # count, the run time would (see BENCHMARKS.md: same workload, fewer tasks).
    a.tasks = 2_000 if a.quick else 20_000
    try:
        import numpy as np
    except ImportError as e:
        print(json.dumps({"case": a.case, "absent": f"numpy missing: {e}"}))
        return
    try:
        unit, samples = CASES[a.case](a, np)
    except ImportError as e:
        print(json.dumps({"case": a.case, "absent": f"import failed: {e}"}))
        return
    print(json.dumps({"case": a.case, "unit": unit, "samples": samples}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
