"""numpy side of the .npy interop check of `cargo xtask test` (step numpy-interop).

    npy_corpus.py generate DIR        write the corpus (good and bad files) and DIR/manifest.json
    npy_corpus.py check CORPUS OUT    numpy compares each good CORPUS/NAME with OUT/NAME (Rust's copy)
    npy_corpus.py verify DIR          numpy loads Rust-written files listed in DIR/manifest.json,
                                      checks dtype, shape, order and values, and that np.save
                                      writes the very same bytes

Exit status 0 on success; every mismatch is printed. Only numpy and the standard library.
"""

import ast
import io
import json
import os
import sys
import warnings

import numpy as np
from numpy.lib import format as npformat

GOOD = []  # (name, array, identical)
BAD = []   # (name, bytes)


def good(name, arr, identical=True):
    GOOD.append((name, arr, identical))


def bad(name, data):
    BAD.append((name, data))


def saved(arr):
    b = io.BytesIO()
    with warnings.catch_warnings():
        # "Stored array in format 2.0/3.0": expected for the long and utf-8 headers.
        warnings.simplefilter("ignore", UserWarning)
        np.save(b, arr, allow_pickle=False)
    return b.getvalue()


def raw_header(dict_text, version=(1, 0), align=64, data=b""):
    """A .npy file with a hand-written header dict (for bad and legacy files)."""
    h = dict_text.encode("latin1")
    prefix = 10 if version == (1, 0) else 12
    pad = align - (prefix + len(h) + 1) % align
    h = h + b" " * pad + b"\n"
    if version == (1, 0):
        ln = len(h).to_bytes(2, "little")
    else:
        ln = len(h).to_bytes(4, "little")
    return b"\x93NUMPY" + bytes(version) + ln + h + data


def values(dt, n):
    """Deterministic, non-trivial contents for n elements of dt."""
    dt = np.dtype(dt)
    rng = np.random.default_rng(n * 7919 + dt.itemsize)
    raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8).tobytes()
    if dt.kind == "b":
        return np.frombuffer(bytes(x & 1 for x in raw), dtype=dt).copy()
    if dt.kind == "f":
        return (np.arange(n, dtype=np.float64) * 1.25 - 3).astype(dt)
    if dt.kind == "c":
        a = np.arange(n, dtype=np.float64)
        return (a - 1j * a / 2).astype(dt)
    if dt.kind == "U":
        return np.array([("é%d名" % i)[: dt.itemsize // 4] for i in range(n)], dtype=dt)
    if dt.names is not None:
        # Fill fields, leave padding bytes zero (as numpy does).
        a = np.zeros(n, dtype=dt)
        for name in dt.names:
            fdt = dt.fields[name][0]
            base = fdt.base
            sub = values(base, n * max(1, int(np.prod(fdt.shape))))
            a[name] = sub.reshape((n,) + fdt.shape)
        return a
    return np.frombuffer(raw, dtype=dt).copy()


def build():
    scalars = ["|b1", "|i1", "|u1"]
    for k in ["i2", "i4", "i8", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]:
        scalars += ["<" + k, ">" + k]
    for t in scalars:
        name = "scalar_" + t.replace("<", "le_").replace(">", "be_").replace("|", "")
        good(name, values(t, 7))
    good("bytes_S5", np.array([b"", b"a", b"hello", b"ab\x00c"], dtype="S5"))
    good("unicode_le_U3", values("<U3", 4))
    good("unicode_be_U3", values(">U3", 4))
    good("void_V4", np.frombuffer(bytes(range(12)), dtype="V4").copy())
    for unit in ["Y", "M", "W", "D", "h", "m", "s", "ms", "us", "ns", "ps", "fs", "as"]:
        good("datetime_" + unit, np.arange(-2, 3).astype("<M8[%s]" % unit))
    good("datetime_generic_empty", np.array([], dtype="M8"))
    good("datetime_10ms", np.arange(3).astype("<M8[10ms]"))
    good("datetime_be_ns", np.arange(3).astype(">M8[ns]"))
    good("timedelta_ns", np.arange(-3, 3).astype("<m8[ns]"))
    good("timedelta_be_D", np.arange(3).astype(">m8[D]"))
    good("timedelta_3h", np.arange(3).astype("<m8[3h]"))
    good("timedelta_nat", np.array(["NaT", 5], dtype="<m8[s]"))
    # Orders and shapes.
    good("fortran_2d", np.asfortranarray(values("<f8", 12).reshape(3, 4)))
    good("fortran_3d_be", np.asfortranarray(values(">i4", 24).reshape(2, 3, 4)))
    good("zero_d", np.array(3.5))
    good("zero_d_record", np.zeros((), dtype=[("a", "<i4"), ("b", "S3")]))
    good("empty_1d", np.zeros(0, dtype="<f4"))
    good("empty_axis", np.zeros((3, 0, 2), dtype=">i2"))
    good("five_d", values("<u2", 2 * 3 * 1 * 2 * 2).reshape(2, 3, 1, 2, 2))
    good("big_first_axis", np.zeros((123456789012, 0), dtype="|u1"))
    # Records.
    rec = np.dtype([("x", "<f8"), ("id", "<i4"), ("tag", "S4")])
    good("record_simple", values(rec, 5))
    gaps = np.dtype({"names": ["a", "b"], "formats": ["<i2", ">f8"], "offsets": [2, 8], "itemsize": 24})
    good("record_gaps", values(gaps, 4))
    good("record_aligned", values(np.dtype([("c", "u1"), ("d", "<f8"), ("e", "u1")], align=True), 3))
    titled = np.dtype({"names": ["a", "b"], "formats": ["<i4", "<f4"], "titles": ["Alpha title", None]})
    good("record_titles", values(titled, 3))
    nested = np.dtype([("p", [("x", "<f4"), ("y", ">f4")]), ("q", [("r", [("s", "u1")]), ("t", "<i8")], (2,))])
    good("record_nested", values(nested, 3))
    good("record_subarrays", values(np.dtype([("m", "<f8", (2, 3)), ("v", "<i2", (4,)), ("u", "<U2", (2,))]), 3))
    inner = np.dtype({"names": ["k"], "formats": ["<u4"], "offsets": [4], "itemsize": 12})
    deep = np.dtype({"names": ["n", "z"], "formats": [inner, ("<c8", (2,))], "offsets": [0, 16], "itemsize": 40})
    good("record_nested_gaps", values(deep, 2))
    # A subarray of a subarray stays nested in numpy 2's descr (not (3, 2)).
    subsub = np.dtype([("a", ("<i4", (2,)), (3,)), ("b", (">u8", (2,)), (1,))])
    good("record_subarray_of_subarray", np.frombuffer(bytes(range(3 * subsub.itemsize)), dtype=subsub))
    very_deep = "<i2"
    for level in range(40):
        very_deep = [("l%d" % level, very_deep)]
    good("record_nested_40_deep", values(np.dtype(very_deep), 2))
    good("record_mixed_order", values(np.dtype([("l", "<u4"), ("b", ">u4"), ("dt", ">M8[us]")]), 4))
    good("record_fortran_2d", np.asfortranarray(values(rec, 6).reshape(2, 3)))
    good("record_latin1_name", values(np.dtype([("é", "<f8"), ("it's", "<i2")]), 2))
    good("record_quotes_backslash", values(np.dtype([('say "hi"', "<i2"), ("back\\slash", "u1"), ("tab\tnl\n", "u1")]), 2))
    # repr escapes: controls, NBSP, soft hyphen, line separator, private use,
    # unassigned (U+0378), noncharacter, combining accent, astral, U+10FFFF.
    odd = ["c\x01\x7f\xa0\xad", "ls\u2028pu\ue000", "un\u0378nc\ufffe", "e\u0301😀\U0010ffff"]
    good("record_unicode_escapes", values(np.dtype([(n, "u1") for n in odd]), 2))
    good("record_utf8_name_v3", values(np.dtype([("名前", "<f8"), ("ω", "<i4")]), 2))
    good("record_empty_struct", np.zeros(2, dtype=np.dtype([])))
    many = np.dtype([("field_with_a_rather_long_name_%05d" % i, "<f4") for i in range(2000)])
    good("record_header_v2", np.zeros(2, dtype=many))
    # Legacy layout from old numpy: 16-byte alignment, Python 2 long suffix.
    legacy_data = np.arange(3, dtype="<i8").tobytes()
    legacy = raw_header("{'descr': '<i8', 'fortran_order': False, 'shape': (3L,), }", align=16, data=legacy_data)
    GOOD.append(("legacy_align16_long", legacy, False))

    # Bad files: each must be refused with a reason.
    obj = io.BytesIO()
    np.save(obj, np.array([1, "a", None], dtype=object), allow_pickle=True)  # noqa: the bad case
    bad("bad_object_array", obj.getvalue())
    objrec = io.BytesIO()
    np.save(objrec, np.zeros(2, dtype=[("a", "<f8"), ("o", "O")]), allow_pickle=True)
    bad("bad_object_field", objrec.getvalue())
    full = saved(np.arange(10, dtype="<f8"))
    bad("bad_truncated_data", full[:-5])
    bad("bad_truncated_header", full[:40])
    bad("bad_magic", b"\x93NUMPZ" + full[6:])
    bad("bad_version", full[:6] + b"\x07\x00" + full[8:])
    bad("bad_shape_overflow", raw_header("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }"))
    # Empty, but numpy refuses it too: non-zero dims x itemsize past isize.
    bad("bad_empty_too_big", raw_header("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 4611686018427387904), }"))
    bad("bad_negative_dim", raw_header("{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }"))
    bad("bad_not_literal", raw_header("{'descr': __import__('os').getcwd(), 'fortran_order': False, 'shape': (1,), }"))
    bad("bad_not_a_dict", raw_header("[('descr', '<f8'), ('fortran_order', False), ('shape', (1,))]"))
    bad("bad_missing_key", raw_header("{'descr': '<f8', 'shape': (1,), }", data=b"\0" * 8))
    bad("bad_extra_key", raw_header("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': 1}", data=b"\0" * 8))
    bad("bad_descr", raw_header("{'descr': '<i3', 'fortran_order': False, 'shape': (1,), }", data=b"\0" * 3))
    bad("bad_fortran_type", raw_header("{'descr': '<f8', 'fortran_order': 0, 'shape': (1,), }", data=b"\0" * 8))
    bad("bad_unterminated", raw_header("{'descr': '<f8, 'fortran_order': False, 'shape': (1,), }"))
    bad("bad_deep_nesting", raw_header("{'descr': " + "[" * 200 + "]" * 200 + ", 'fortran_order': False, 'shape': (), }"))
    bad("bad_longdouble", saved(np.zeros(3, dtype=np.longdouble)))
    bad("bad_trailing_bytes", full + b"extra")
    head = full[10:128].replace(b"<f8", b"\xff\xfe8")
    bad("bad_v3_invalid_utf8", b"\x93NUMPY\x03\x00" + len(head).to_bytes(4, "little") + head + full[128:])


def generate(outdir):
    build()
    os.makedirs(outdir, exist_ok=True)
    for f in os.listdir(outdir):
        if f.endswith(".npy") or f == "manifest.json":
            os.remove(os.path.join(outdir, f))
    manifest = []
    for name, arr, identical in GOOD:
        data = arr if isinstance(arr, bytes) else saved(arr)
        with open(os.path.join(outdir, name + ".npy"), "wb") as fh:
            fh.write(data)
        manifest.append({"name": name + ".npy", "expect": "ok", "identical": identical})
    for name, data in BAD:
        with open(os.path.join(outdir, name + ".npy"), "wb") as fh:
            fh.write(data)
        manifest.append({"name": name + ".npy", "expect": "refused", "identical": False})
    with open(os.path.join(outdir, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1)
    print("generated %d good and %d bad files in %s" % (len(GOOD), len(BAD), outdir))


def header_of(path):
    with open(path, "rb") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        version = npformat.read_magic(fh)
        return npformat._read_array_header(fh, version, max_header_size=10**9)


def load(path):
    with warnings.catch_warnings():
        # "created on Python 2": the legacy file with `3L` is meant to be old.
        warnings.simplefilter("ignore", UserWarning)
        return np.load(path, allow_pickle=False, max_header_size=10**9)


def check(corpus, out):
    with open(os.path.join(corpus, "manifest.json")) as fh:
        manifest = json.load(fh)
    failures = []
    checked = 0
    for entry in manifest:
        if entry["expect"] != "ok":
            continue
        name = entry["name"]
        a_path, b_path = os.path.join(corpus, name), os.path.join(out, name)
        if not os.path.exists(b_path):
            failures.append("%s: Rust wrote no file" % name)
            continue
        a, b = load(a_path), load(b_path)
        (sa, fa, da), (sb, fb, db) = header_of(a_path), header_of(b_path)
        problems = []
        if a.dtype != b.dtype or npformat.dtype_to_descr(a.dtype) != npformat.dtype_to_descr(b.dtype):
            problems.append("dtype %r != %r" % (a.dtype, b.dtype))
        if sa != sb or a.shape != b.shape:
            problems.append("shape %r != %r" % (sa, sb))
        if fa != fb:
            problems.append("fortran_order %r != %r" % (fa, fb))
        if a.tobytes(order="A") != b.tobytes(order="A"):
            problems.append("data bytes differ")
        with open(a_path, "rb") as fh1, open(b_path, "rb") as fh2:
            same_file = fh1.read() == fh2.read()
        if entry["identical"] and not same_file:
            problems.append("files are not byte-identical")
        if not entry["identical"]:
            # Rewritten in numpy 2's layout: must equal what np.save writes.
            with open(b_path, "rb") as fh:
                if fh.read() != saved(a):
                    problems.append("rewrite differs from np.save")
        if problems:
            failures.append("%s: %s" % (name, "; ".join(problems)))
        checked += 1
    for f in failures:
        print("MISMATCH " + f)
    print("numpy checked %d Rust-rewritten files, %d mismatches" % (checked, len(failures)))
    return 1 if failures else 0


def expected(entry):
    """The array the Rust generator meant, from the formula named in the manifest."""
    dt = npformat.descr_to_dtype(ast.literal_eval(entry["descr"]))
    shape = tuple(entry["shape"])
    n = int(np.prod(shape)) if shape else 1
    i = np.arange(n)
    formula = entry["formula"]
    if formula == "index":
        flat = i.astype(dt)
    elif formula == "half":
        flat = (i * 0.5 - 1).astype(dt)
    elif formula == "complex":
        flat = (i - 1j * i).astype(dt)
    elif formula == "bool":
        flat = (i % 3 == 1).astype(dt)
    elif formula == "bytes":
        flat = np.array([b"s%d" % k for k in i], dtype=dt)
    elif formula == "unicode":
        flat = np.array(["u%dé" % k for k in i], dtype=dt)
    elif formula == "record":
        flat = np.zeros(n, dtype=dt)
        flat["x"] = i * 0.5
        flat["id"] = i
        flat["tag"] = np.stack([(i + j) % 256 for j in range(4)], axis=-1)
    elif formula == "strings_record":
        flat = np.zeros(n, dtype=dt)
        flat["name"] = ["n%dé" % k for k in i]
        flat["code"] = [b"c%d" % k for k in i]
        flat["age"] = i
    elif formula == "titled":
        flat = np.zeros(n, dtype=dt)
        flat["a"] = i
        flat["b"] = i * 2.0
    else:
        raise ValueError("unknown formula %r" % formula)
    return flat.reshape(shape), dt


def verify(directory):
    with open(os.path.join(directory, "manifest.json")) as fh:
        manifest = json.load(fh)
    failures = []
    for entry in manifest:
        path = os.path.join(directory, entry["name"])
        a = load(path)
        want, dt = expected(entry)
        problems = []
        if a.dtype != dt:
            problems.append("dtype %r, expected %r" % (a.dtype, dt))
        if a.shape != want.shape:
            problems.append("shape %r, expected %r" % (a.shape, want.shape))
        if a.ndim > 1 and bool(entry["fortran"]) != (a.flags.f_contiguous and not a.flags.c_contiguous):
            problems.append("memory order differs")
        if a.dtype == dt and a.shape == want.shape and a.tobytes() != want.tobytes():
            problems.append("values differ: %r vs %r" % (a.ravel()[:4], want.ravel()[:4]))
        want_file = saved(np.asfortranarray(want) if entry["fortran"] else want)
        with open(path, "rb") as fh:
            if fh.read() != want_file:
                problems.append("file differs from what np.save writes")
        if problems:
            failures.append("%s: %s" % (entry["name"], "; ".join(problems)))
    for f in failures:
        print("MISMATCH " + f)
    print("numpy verified %d Rust-written files, %d mismatches" % (len(manifest), len(failures)))
    return 1 if failures else 0


def main(argv):
    if len(argv) == 3 and argv[1] == "generate":
        generate(argv[2])
        return 0
    if len(argv) == 4 and argv[1] == "check":
        return check(argv[2], argv[3])
    if len(argv) == 3 and argv[1] == "verify":
        return verify(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
