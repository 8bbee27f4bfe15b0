"""numpy side of the `ndarray-interop` step of `cargo xtask test`.

    check MANIFEST          numpy opens every array Rust put into /dev/shm
                            (np.load(mmap_mode='r')) and checks dtype, shape,
                            memory order and every value
    write PREFIX MANIFEST   numpy writes .npy files /dev/shm/PREFIX-*.npy
                            (good ones and deliberately bad ones) for Rust to
                            pop, and lists them in MANIFEST

Values are a formula of the C-order flat index, shared with
xtask/src/ndarray_interop.rs. Exits non-zero with a message on any mismatch.
"""

import json
import sys

import numpy as np

SHM = "/dev/shm/"
REC = np.dtype([("id", "<i8"), ("x", "<f8"), ("tag", "u1", (8,))])
# A #[repr(C)] struct with padding: numpy's aligned struct of the same layout.
PADDED = np.dtype(
    [("id", "<i8"), ("x", "<f8"), ("flag", "u1"), ("name", "u1", (16,))], align=True
)
DTYPES = {
    "f8": np.dtype("<f8"),
    "i4": np.dtype("<i4"),
    "b1": np.dtype("?"),
    "u1": np.dtype("u1"),
    "c16": np.dtype("<c16"),
    "f2": np.dtype("<f2"),
    "rec": REC,
    "padded": PADDED,
}


def values(kind, shape):
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.int64)
    if kind == "f8":
        v = i * 0.5 - 3.0
    elif kind == "i4":
        v = i * 7 - 100
    elif kind == "b1":
        v = i % 3 == 0
    elif kind == "u1":
        v = i % 251
    elif kind == "c16":
        v = i - 1j * i
    elif kind == "f2":
        v = (i % 100) * 0.25
    elif kind == "rec":
        v = np.zeros(n, REC)
        v["id"] = i
        v["x"] = i / 4.0
        v["tag"] = (i[:, None] + np.arange(8)) % 256
    elif kind == "padded":
        v = np.zeros(n, PADDED)
        v["id"] = i
        v["x"] = i * 0.25
        v["flag"] = i % 3
        v["name"] = (97 + i % 26)[:, None]
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    return np.asarray(v).astype(DTYPES[kind]).reshape(shape)


def fail(msg):
    print(f"ndarray_interop.py: {msg}", file=sys.stderr)
    raise SystemExit(1)


def check(manifest):
    with open(manifest) as f:
        entries = json.load(f)
    for e in entries:
        path = SHM + e["name"]
        a = np.load(path, mmap_mode="r")
        if not isinstance(a, np.memmap):
            fail(f"{path}: not memory-mapped")
        want = values(e["kind"], tuple(e["shape"]))
        if a.dtype != want.dtype:
            fail(f"{path}: dtype {a.dtype} != {want.dtype}")
        if a.shape != want.shape:
            fail(f"{path}: shape {a.shape} != {want.shape}")
        if e["fortran"] and a.ndim > 1 and a.size > 1:
            if not a.flags.f_contiguous or a.flags.c_contiguous:
                fail(f"{path}: not in Fortran order")
        elif a.size > 1 and not a.flags.c_contiguous:
            fail(f"{path}: not in C order")
        if not np.array_equal(a, want):
            fail(f"{path}: values differ")
        del a
        print(f"numpy ok {e['name']} {e['kind']} {tuple(e['shape'])}")


CASES = [
    ("f8", (3, 4), False),
    ("f8", (2, 3, 4), True),
    ("i4", (5,), False),
    ("i4", (4, 0, 2), False),
    ("b1", (7, 3), True),
    ("u1", (), False),
    ("c16", (6,), False),
    ("f2", (2, 5), False),
    ("rec", (10,), False),
    ("rec", (3, 2), True),
    ("padded", (4, 3), True),
    ("f8", (1000, 300), False),
]


def write(prefix, manifest):
    good = []
    for k, (kind, shape, fortran) in enumerate(CASES):
        a = values(kind, shape)
        if fortran:
            a = np.asfortranarray(a)
        name = f"{prefix}-{k}.npy"
        np.save(SHM + name, a)
        good.append({"name": name, "kind": kind, "shape": list(shape), "fortran": fortran})
    bad = []
    # Data cut short: the header promises more than the file holds.
    name = f"{prefix}-truncated.npy"
    np.save(SHM + name, values("f8", (10,)))
    with open(SHM + name, "r+b") as f:
        f.truncate(f.seek(0, 2) - 8)
    bad.append({"name": name, "as": "f8", "ndim": 1, "error": "TooSmall"})
    # Big-endian floats are not the native f64.
    name = f"{prefix}-bigendian.npy"
    np.save(SHM + name, values("f8", (4,)).astype(">f8"))
    bad.append({"name": name, "as": "f8", "ndim": 1, "error": "DTypeMismatch"})
    # A 2-D array popped as 1-D.
    name = f"{prefix}-dims.npy"
    np.save(SHM + name, values("i4", (2, 2)))
    bad.append({"name": name, "as": "i4", "ndim": 1, "error": "DimMismatch"})
    # Not a .npy file at all.
    name = f"{prefix}-garbage.npy"
    with open(SHM + name, "wb") as f:
        f.write(b"definitely not a numpy file" * 4)
    bad.append({"name": name, "as": "f8", "ndim": 1, "error": "Codec"})
    # A bool array whose bytes are not 0/1.
    name = f"{prefix}-badbool.npy"
    np.save(SHM + name, np.frombuffer(bytes([0, 1, 7, 1]), dtype="u1").view("?"))
    bad.append({"name": name, "as": "b1", "ndim": 1, "error": "Codec"})
    with open(manifest, "w") as f:
        json.dump({"good": good, "bad": bad}, f)
    print(f"numpy wrote {len(good)} good and {len(bad)} bad files")


def main(argv):
    if len(argv) == 3 and argv[1] == "check":
        check(argv[2])
    elif len(argv) == 4 and argv[1] == "write":
        write(argv[2], argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
