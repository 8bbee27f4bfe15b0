"""pyarrow side of the `arrow-interop` step of `cargo xtask test`.

The table built by `expected()` is the same, value for value and type for
type, as `npshmex_arrow::sample::every_type()` in Rust (keep them in sync).

    arrow_interop.py check MANIFEST.json
        Rust wrote IPC files into /dev/shm (and compressed ones to disk);
        open each with pa.ipc.open_file(pa.memory_map(path)) and compare it
        with the expected table of its variant.
    arrow_interop.py write PREFIX OUT.json
        Write the variants into /dev/shm/PREFIX-*.arrow, uncompressed, LZ4-
        and ZSTD-compressed, plus a pyarrow.feather.write_feather file with
        its defaults (LZ4) and deliberately bad files, for Rust to read; the
        manifest goes to OUT.json.
    arrow_interop.py write-dir DIR OUT.json
        The same files into DIR (input of `cargo xtask roundtrip`).
    arrow_interop.py compare IN OUT MANIFEST.json
        Every good file of the manifest in OUT equals the one in IN.
"""

import decimal
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc

D = decimal.Decimal


def view(values, storage, target):
    return pa.array(values, storage).view(target)


def expected():
    n = None
    strs = ["a", "héllo", n, "", "a string longer than twelve bytes"]
    bins = [b"\x00\x01", b"", n, b"abc", b"0123456789abcdefXYZ"]
    i8, i16, i32, i64 = (np.iinfo(t) for t in (np.int8, np.int16, np.int32, np.int64))
    cols = {
        "null": pa.nulls(5),
        "bool": pa.array([True, False, n, True, False]),
        "int8": pa.array([int(i8.min), 1, n, 3, int(i8.max)], pa.int8()),
        "int16": pa.array([int(i16.min), 1, n, 3, int(i16.max)], pa.int16()),
        "int32": pa.array([int(i32.min), 1, n, 3, int(i32.max)], pa.int32()),
        "int64": pa.array([int(i64.min), 1, n, 3, int(i64.max)], pa.int64()),
        "uint8": pa.array([0, 1, n, 3, 2**8 - 1], pa.uint8()),
        "uint16": pa.array([0, 1, n, 3, 2**16 - 1], pa.uint16()),
        "uint32": pa.array([0, 1, n, 3, 2**32 - 1], pa.uint32()),
        "uint64": pa.array([0, 1, n, 3, 2**64 - 1], pa.uint64()),
        "float16": pa.array(
            [np.float16(0.5), np.float16(1.5), n, np.float16(-2.0), np.float16(4.0)],
            pa.float16(),
        ),
        "float32": pa.array(
            [0.5, 1.5, n, -2.0, float(np.finfo(np.float32).max)], pa.float32()
        ),
        "float64": pa.array([0.5, 1.5, n, -2.0, float("inf")], pa.float64()),
        "utf8": pa.array(strs, pa.utf8()),
        "large_utf8": pa.array(strs, pa.large_utf8()),
        "utf8_view": pa.array(strs, pa.string_view()),
        "binary": pa.array(bins, pa.binary()),
        "large_binary": pa.array(bins, pa.large_binary()),
        "binary_view": pa.array(bins, pa.binary_view()),
        "fixed_size_binary": pa.array(
            [b"abc", b"def", n, b"\x00\x01\x02", b"xyz"], pa.binary(3)
        ),
        "decimal128": pa.array(
            [D("123.45"), D("-0.01"), n, D("0.00"), D("99999999.99")],
            pa.decimal128(10, 2),
        ),
        "decimal256": pa.array(
            [D("0.00001"), D("-1.00000"), n, D("0.00000"), D(10**30)],
            pa.decimal256(40, 5),
        ),
        "date32": view([0, 19000, n, -1, 1], pa.int32(), pa.date32()),
        "date64": view(
            [0, 86_400_000, n, -86_400_000, 1_641_600_000_000], pa.int64(), pa.date64()
        ),
        "time32_s": view([0, 1, n, 3600, 86_399], pa.int32(), pa.time32("s")),
        "time32_ms": view(
            [0, 1, n, 3_600_000, 86_399_999], pa.int32(), pa.time32("ms")
        ),
        "time64_us": view(
            [0, 1, n, 3_600_000_000, 86_399_999_999], pa.int64(), pa.time64("us")
        ),
        "time64_ns": view(
            [0, 1, n, 3_600_000_000_000, 86_399_999_999_999],
            pa.int64(),
            pa.time64("ns"),
        ),
        "timestamp_s": view(
            [0, 1, n, -1, 1_700_000_000], pa.int64(), pa.timestamp("s")
        ),
        "timestamp_ms_utc": view(
            [0, 1, n, -1, 1_700_000_000_000], pa.int64(), pa.timestamp("ms", "UTC")
        ),
        "timestamp_us_offset": view(
            [0, 1, n, -1, 1_700_000_000_000_000],
            pa.int64(),
            pa.timestamp("us", "+05:30"),
        ),
        "timestamp_ns_zone": view(
            [0, 1, n, -1, 1_700_000_000_000_000_000],
            pa.int64(),
            pa.timestamp("ns", "America/New_York"),
        ),
        "duration_ms": view(
            [0, -1, n, 1000, int(i64.max)], pa.int64(), pa.duration("ms")
        ),
        "duration_ns": view(
            [0, -1, n, 1000, int(i64.min)], pa.int64(), pa.duration("ns")
        ),
        "interval_mdn": pa.array(
            [(1, 2, 3), (-1, 0, 0), n, (0, 0, 0), (12, 31, 1_000_000_000)],
            pa.month_day_nano_interval(),
        ),
        "list_int32": pa.array([[1, 2], [], n, [3, n], [4]], pa.list_(pa.int32())),
        "large_list_utf8": pa.array(
            [["a"], n, [], ["b", "c"], [n]], pa.large_list(pa.utf8())
        ),
        "list_view_int32": pa.ListViewArray.from_arrays(
            pa.array([3, 0, 0, 1, 0], pa.int32()),
            pa.array([2, 0, 0, 2, 1], pa.int32()),
            pa.array([1, 2, 3, n, 4], pa.int32()),
            mask=pa.array([False, False, True, False, False]),
        ),
        "fixed_size_list_f32": pa.array(
            [[1, 2], [3, 4], n, [5, n], [7, 8]], pa.list_(pa.float32(), 2)
        ),
        "struct": pa.array(
            [
                {"a": 1, "b": "x"},
                {"a": 2, "b": n},
                n,
                {"a": 4, "b": "w"},
                {"a": 5, "b": "v"},
            ],
            pa.struct([("a", pa.int32()), ("b", pa.utf8())]),
        ),
        "map": pa.array(
            [[("a", 1)], [], n, [("b", 2), ("c", n)], [("d", 4)]],
            pa.map_(pa.utf8(), pa.int64()),
        ),
        "dense_union": pa.UnionArray.from_dense(
            pa.array([0, 1, 0, 1, 0], pa.int8()),
            pa.array([0, 0, 1, 1, 2], pa.int32()),
            [pa.array([1, n, 3], pa.int32()), pa.array(["a", "bb"])],
            ["i", "s"],
            [0, 1],
        ),
        "sparse_union": pa.UnionArray.from_sparse(
            pa.array([0, 1, 0, 1, 0], pa.int8()),
            [
                pa.array([1, n, n, n, 5], pa.int32()),
                pa.array([n, "b", n, "d", n]),
            ],
            ["i", "s"],
            [0, 1],
        ),
        "dictionary": pa.DictionaryArray.from_arrays(
            pa.array([0, 1, n, 0, 2], pa.int32()), pa.array(["a", "b", "c"])
        ),
        "list_dictionary": pa.ListArray.from_arrays(
            pa.array([0, 2, 2, 2, 4, 5], pa.int32()),
            pa.DictionaryArray.from_arrays(
                pa.array([0, 1, 1, n, 2], pa.int16()), pa.array(["a", "b", "c"])
            ),
            mask=pa.array([False, False, True, False, False]),
        ),
        "dictionary_int8_large_utf8": pa.DictionaryArray.from_arrays(
            pa.array([1, 0, n, 1, 1], pa.int8()), pa.array(["x", "yy"], pa.large_utf8())
        ),
        "run_end_encoded": pa.RunEndEncodedArray.from_arrays(
            pa.array([2, 3, 5], pa.int32()), pa.array(["a", n, "b"])
        ),
    }
    return pa.table(cols)


def variant(name):
    """The table a file of this variant must hold (list of batches)."""
    t = expected()
    if name == "full":
        return [t]
    if name == "sliced":
        return [t.slice(1, 3)]
    if name == "batches":
        return [t, t.slice(2, 3)]
    if name == "empty":
        return [t.slice(0, 0)]
    if name == "repeated":
        # 1000 rows: buffers long enough that both codecs really compress
        # them (the 5-row buffers are stored uncompressed, prefix -1)
        return [pa.concat_tables([t] * 200).combine_chunks()]
    if name == "no-16-byte":
        # pyarrow aligns buffers to 8 bytes; arrow-rs copies buffers of
        # 16-byte elements (decimals, string/binary views) that are not
        # 16-aligned, everything else is read in place
        return [t.drop_columns(["decimal128", "decimal256", "utf8_view", "binary_view"])]
    if name == "v4":
        # pyarrow writes V4 unions and run-end encoded arrays without the
        # validity buffer that V4 has (and arrow-rs expects): left out
        return [t.drop_columns(["dense_union", "sparse_union", "run_end_encoded"])]
    raise SystemExit(f"unknown variant {name}")


def concat(tables):
    return pa.concat_tables(tables)


def describe_difference(got, want):
    if got.schema != want.schema:
        for f, g in zip(want.schema, got.schema):
            if f != g:
                return f"field {f.name}: expected {f} got {g}"
        return f"schema: expected {want.schema} got {got.schema}"
    for name in want.column_names:
        if not got.column(name).equals(want.column(name)):
            return f"column {name}: expected {want.column(name)} got {got.column(name)}"
    return "tables differ"


def read(path):
    """Reads an IPC file through a memory map, as a consumer of /dev/shm would."""
    with pa.memory_map(path) as src:
        reader = ipc.open_file(src)
        return reader.read_all(), reader.num_record_batches


def uncompressed_size(tables):
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, tables[0].schema) as w:
        for t in tables:
            w.write_table(t)
    return sink.getvalue().size


def check(manifest_path):
    with open(manifest_path) as f:
        manifest = json.load(f)
    for entry in manifest:
        path, var = entry["path"], entry["variant"]
        codec = entry.get("compression")
        got, nbatches = read(path)
        want = concat(variant(var))
        if not got.equals(want):
            raise SystemExit(
                f"pyarrow: {path} ({var}) differs: {describe_difference(got, want)}"
            )
        size = os.path.getsize(path)
        if codec and var == "repeated" and size >= uncompressed_size(variant(var)) // 2:
            raise SystemExit(f"pyarrow: {path} ({codec}) is not compressed: {size} bytes")
        print(f"pyarrow ok {os.path.basename(path)} {var} {codec or ''}: "
              f"{got.num_rows} rows, {got.num_columns} columns, {nbatches} batches, {size} bytes")


def write_file(path, var, **options):
    tables = variant(var)
    schema = tables[0].schema
    opts = ipc.IpcWriteOptions(**options)
    with ipc.new_file(path, schema, options=opts) as w:
        for t in tables:
            batches = t.to_batches()
            if not batches:  # an empty table may have no batch at all
                full = expected()
                batches = [
                    pa.record_batch(
                        [c.chunk(0).slice(0, 0) for c in full.columns], schema=schema
                    )
                ]
            for b in batches:
                w.write_batch(b)


def write_all(path_of, out_json):
    good, bad = [], []
    for var in ["no-16-byte", "full", "sliced", "batches", "empty"]:
        p = path_of(f"{var}.arrow")
        write_file(p, var)
        good.append({"path": p, "variant": var})
    # legacy metadata V4 is still read
    p = path_of("v4.arrow")
    write_file(p, "v4", metadata_version=ipc.MetadataVersion.V4)
    good.append({"path": p, "variant": "v4"})

    # compressed bodies, both codecs of the IPC format
    for codec in ["lz4", "zstd"]:
        for var in ["full", "sliced", "batches", "empty", "repeated"]:
            p = path_of(f"{codec}-{var}.arrow")
            write_file(p, var, compression=codec)
            good.append({"path": p, "variant": var, "compression": codec})
    # what pyarrow.feather / pandas' to_feather write with their defaults
    # (feather V2: an IPC file, LZ4-compressed)
    p = path_of("defaults.feather")
    feather.write_feather(concat(variant("repeated")), p)
    good.append({"path": p, "variant": "repeated", "compression": "lz4"})
    full = path_of("full.arrow")
    with open(full, "rb") as f:
        data = f.read()
    p = path_of("truncated.arrow")
    with open(p, "wb") as f:
        f.write(data[: len(data) // 2])
    bad.append({"path": p, "error": "Malformed"})
    p = path_of("garbage.arrow")
    with open(p, "wb") as f:
        f.write(b"ARROW1\0\0" + bytes(range(256)) * 4 + b"\x10\0\0\0ARROW1")
    bad.append({"path": p, "error": "Flatbuffer"})
    with open(out_json, "w") as f:
        json.dump({"good": good, "bad": bad}, f, indent=1)
    print(f"pyarrow wrote {len(good)} good and {len(bad)} bad files")


def compare(in_dir, out_dir, manifest_path):
    with open(manifest_path) as f:
        manifest = json.load(f)
    for entry in manifest["good"]:
        name = os.path.basename(entry["path"])
        a, _ = read(os.path.join(in_dir, name))
        b, _ = read(os.path.join(out_dir, name))
        if not b.equals(a):
            raise SystemExit(
                f"pyarrow: roundtrip of {name} differs: {describe_difference(b, a)}"
            )
        print(f"pyarrow ok roundtrip {name}")


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd = argv[1]
    if cmd == "check" and len(argv) == 3:
        check(argv[2])
    elif cmd == "write" and len(argv) == 4:
        prefix = argv[2]
        write_all(lambda n: f"/dev/shm/{prefix}-{n}", argv[3])
    elif cmd == "write-dir" and len(argv) == 4:
        d = argv[2]
        os.makedirs(d, exist_ok=True)
        write_all(lambda n: os.path.join(d, n), argv[3])
    elif cmd == "compare" and len(argv) == 5:
        compare(argv[2], argv[3], argv[4])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
