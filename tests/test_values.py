"""Values and the files they come from: bindings, CSV columns, .npy/.npz checks, limits."""
import io
import os
import struct
import zipfile

import numpy as np
import pytest

from gradcli import values
from gradcli.errors import BindingError
from gradcli.files import decode, read_bytes, size_text


def npy_header(shape, descr="<f8"):
    """A .npy version 1.0 header declaring ``shape``, as NumPy writes it."""
    d = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (descr, tuple(shape))
    d += " " * (118 - len(d)) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode()


def error(f, *args, **kwargs):
    with pytest.raises(BindingError) as e:
        f(*args, **kwargs)
    return str(e.value)


# ---------------------------------------------------------------- numbers and lists

def test_number_out_of_float64_range_warns():
    w = []
    assert np.isinf(values.parse_value("1e400", "x", w))
    assert values.parse_value("-1e400", "x", w) == -np.inf
    assert values.parse_value("1e-400", "x", w) == 0
    assert len(w) == 3
    assert "'1e400' is too large for float64 and becomes inf" in w[0]
    assert "becomes -inf" in w[1]
    assert "'1e-400' is too small for float64 and becomes 0" in w[2]


def test_exact_zero_and_written_inf_do_not_warn():
    w = []
    for text in ("0", "0e-400", "-0.0", "inf", "-inf", "nan", "1e-310", "1e308"):
        values.parse_value(text, "x", w)
    assert w == []
    assert values.parse_value("1e-310", "x") > 0  # a subnormal, not 0


def test_json_list_out_of_range_warns_once_with_a_count():
    w = []
    v = values.parse_value("[1e400, 2, 1e-999, 3e-500, " + "9" * 400 + "]", "v", w)
    np.testing.assert_array_equal(v, [np.inf, 2, 0, 0, np.inf])
    assert w == ["binding v: 2 numbers are too large for float64 and become inf",
                 "binding v: 2 numbers are too small for float64 and become 0"]


def test_bindings_carry_warnings_into_the_evaluation():
    import gradcli
    from gradcli import engine

    b = values.parse_bindings(["x=1e400", "y=2"])
    ev = engine.evaluate(gradcli.compile("x + y"), b)
    assert any("becomes inf" in m for m in ev.warnings), ev.warnings


def test_float32_underflow_warns_like_overflow():
    import gradcli

    ev = gradcli.evaluate("x + y", x=1e-50, y=1e50, dtype="float32")
    assert any("binding x is too small for float32 and becomes 0" in m for m in ev.warnings)
    assert any("binding y is too large for float32 and becomes inf" in m for m in ev.warnings)


@pytest.mark.parametrize("depth", [33, 65, 1000, 100_000])
def test_one_nesting_limit_with_one_message(depth):
    text = "[" * depth + "1" + "]" * depth
    msg = error(values.parse_value, text, "v")
    assert msg == "bad value for v: lists nested more than 32 deep; an array has at most 32 axes"


def test_32_deep_is_allowed():
    assert values.parse_value("[" * 32 + "1" + "]" * 32, "v").shape == (1,) * 32


def test_a_name_bound_twice_names_both():
    msg = error(values.parse_bindings, ["x=1", "y=2", "x=[3]"])
    assert "x is bound twice" in msg and "'x=1'" in msg and "'x=[3]'" in msg


def test_names_compare_as_python_compares_them():
    import gradcli

    # NFKC: the mathematical italic x is x, so binding both is binding x twice
    assert list(values.parse_bindings(["\U0001d465=1"])) == ["\U0001d465"]  # as written
    assert "x is bound twice" in error(values.parse_bindings, ["\U0001d465=1", "x=2"])
    assert float(gradcli.evaluate("x * 2", {"\U0001d465": 1.5}).value) == 3.0
    assert float(gradcli.evaluate("\u00e9 + 1", {"e\u0301": 1}).value) == 2.0  # decomposed é
    ev = gradcli.evaluate("x * 2", {"\U0001d465": 1.5})
    assert not any("not used" in w for w in ev.warnings), ev.warnings


def test_command_line_overrides_the_values_file():
    b = values.parse_bindings(["x=5"], base={"x": np.asarray(1.0), "y": np.asarray(2.0)})
    assert float(b["x"]) == 5 and float(b["y"]) == 2


def test_long_and_control_text_is_quoted_short():
    msg = error(values.parse_value, "\x1b[31m" + "z" * 100_000, "x")
    assert len(msg) < 200 and "\x1b" not in msg


# ---------------------------------------------------------------- files: what is read

def test_devices_fifos_and_directories_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")
    assert "character device, not a regular file" in error(values.parse_value, "@/dev/zero")
    assert "FIFO (named pipe), not a regular file" in error(values.parse_value, f"@{fifo}")
    assert "directory, not a regular file" in error(values.parse_value, f"@{tmp_path}")
    assert "character device" in error(values.load_values_file, str(link))
    assert f"--values {link}" in error(values.load_values_file, str(link))


def test_size_cap_says_so(tmp_path, monkeypatch):
    f = tmp_path / "v.txt"
    f.write_text("1 2 3 4 5 6 7 8 9 10\n")
    monkeypatch.setenv("GRADCLI_MAX_BYTES", "10")
    msg = error(values.parse_value, f"@{f}", "x")
    assert "the file is 21 bytes; gradcli reads at most 10 bytes" in msg
    assert "GRADCLI_MAX_BYTES" in msg
    monkeypatch.setenv("GRADCLI_MAX_BYTES", "lots")
    msg = error(values.parse_value, f"@{f}", "x")
    assert "GRADCLI_MAX_BYTES=lots: give a number of bytes" in msg


def test_a_file_longer_than_its_size_says_is_stopped_at_the_cap(monkeypatch):
    # /proc files say they are 0 bytes long and then keep going
    monkeypatch.setenv("GRADCLI_MAX_BYTES", "100")
    assert "over 100 bytes" in error(read_bytes, "/proc/self/maps", "x=@/proc/self/maps")


def test_text_bom_and_line_ends():
    assert decode(b"\xef\xbb\xbfx\r\ny\rz\n", "f") == "x\ny\nz\n"
    msg = error(decode, b"ok\n\xff\xfe", "x=@f.txt")
    assert "not UTF-8 text (byte 0xff at line 2" in msg


def test_size_text():
    assert [size_text(n) for n in (5, 1500, 3.2e9, 8e15, 8e23)] == \
        ["5 bytes", "1.5 KB", "3.2 GB", "8 PB", "8e+23 bytes"]


# ---------------------------------------------------------------- CSV

def test_csv_header_is_names_not_data(tmp_path):
    f = tmp_path / "data.csv"
    f.write_text("x,y,z\n1,2,3\n4,5,6\n")
    np.testing.assert_array_equal(values.parse_value(f"@{f}"), [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(values.parse_value(f"@{f}:y"), [2, 5])
    assert values.parse_value(f"@{f}:y").shape == (2,)


def test_csv_column_of_one_row_is_a_vector(tmp_path):
    f = tmp_path / "one.csv"
    f.write_text('"a","b"\r\n7,8\r\n')
    assert values.parse_value(f"@{f}:b").shape == (1,)
    assert float(values.parse_value(f"@{f}:b")[0]) == 8


def test_csv_without_header_keeps_every_row(tmp_path):
    f = tmp_path / "plain.csv"
    f.write_text("1,2\n3,4\n")
    np.testing.assert_array_equal(values.parse_value(f"@{f}"), [[1, 2], [3, 4]])
    assert "no header row to find column x" in error(values.parse_value, f"@{f}:x")


def test_csv_column_errors(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("alpha,beta\n1,2\n")
    msg = error(values.parse_value, f"@{f}:alpah", "w")
    assert "no column named alpah; did you mean alpha?" in msg and "(columns: alpha, beta)" in msg
    g = tmp_path / "h.csv"
    g.write_text("x,y\n")
    assert "header row and no numbers" in error(values.parse_value, f"@{g}")
    h = tmp_path / "bad.csv"
    h.write_text("x,y\n1,oops\n")
    assert "could not convert" in error(values.parse_value, f"@{h}")


def test_a_file_whose_name_has_a_colon_is_read_whole(tmp_path):
    f = tmp_path / "a.csv:b"  # its extension is .csv:b: whitespace-separated text
    f.write_text("1 2\n")
    np.testing.assert_array_equal(values.parse_value(f"@{f}"), [1, 2])


# ---------------------------------------------------------------- .npy and .npz

@pytest.mark.parametrize("shape, words", [
    ((10 ** 15,), "(1,000,000,000,000,000 elements, 8 PB) but only 64 bytes follow"),
    ((10 ** 12, 10 ** 11), "100,000,000,000,000,000,000,000 elements"),
])
def test_npy_header_declaring_more_than_the_file_holds(tmp_path, shape, words):
    f = tmp_path / "huge.npy"
    f.write_bytes(npy_header(shape) + bytes(64))
    msg = error(values.parse_value, f"@{f}", "W")
    assert msg.startswith(f"W=@{f}: the header declares shape") and words in msg
    assert "truncated or corrupt" in msg


def test_npy_empty_junk_truncated_complex_object(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "junk.npy").write_bytes(b"hello, not an array")
    np.save(tmp_path / "ok.npy", np.arange(6.0).reshape(2, 3))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:-5])
    np.save(tmp_path / "c.npy", np.ones(3) * 1j)
    np.save(tmp_path / "o.npy", np.array([1, None], dtype=object), allow_pickle=True)
    cases = {"empty": "the file is empty, not a .npy array",
             "junk": "not a .npy file (it does not begin with NumPy's magic string)",
             "cut": "declares shape (2, 3) (6 elements, 48 bytes) but only 43 bytes follow",
             "c": "complex128 values are not real numbers",
             "o": "pickles are disallowed"}
    for stem, words in cases.items():
        msg = error(values.parse_value, f"@{tmp_path / stem}.npy", "x")
        assert f"{stem}.npy" in msg and words in msg, msg


def test_npy_round_trip_c_and_fortran_order(tmp_path):
    a = np.arange(12.0).reshape(3, 4)
    np.save(tmp_path / "c.npy", a)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    np.save(tmp_path / "i.npy", np.arange(5, dtype=np.int16))
    np.testing.assert_array_equal(values.parse_value(f"@{tmp_path / 'c.npy'}"), a)
    np.testing.assert_array_equal(values.parse_value(f"@{tmp_path / 'f.npy'}"), a)
    np.testing.assert_array_equal(values.parse_value(f"@{tmp_path / 'i.npy'}"), np.arange(5))
    assert values.parse_value(f"@{tmp_path / 'c.npy'}").flags.writeable


def test_npz_good_and_bad(tmp_path):
    np.savez(tmp_path / "ok.npz", a=np.ones(2), b=np.zeros((2, 2)))
    got = values.load_values_file(str(tmp_path / "ok.npz"))
    assert sorted(got) == ["a", "b"] and got["b"].shape == (2, 2)
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04garbage" * 10)
    (tmp_path / "empty.npz").write_bytes(b"")
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as z:
        z.writestr("W.npy", npy_header((10 ** 15,)) + bytes(8))
    broken = bytearray(data)
    at = data.find(b"NUMPY", 100)
    broken[at + 200:at + 210] = b"X" * 10
    (tmp_path / "crc.npz").write_bytes(bytes(broken))
    for stem, words in {"cut": "not a valid .npz archive, corrupt or truncated",
                        "junk": "not a valid .npz archive",
                        "empty": "the file is empty, not an .npz archive",
                        "huge": "member W.npy: the header declares shape (1000000000000000,)",
                        "crc": "not a valid .npz archive"}.items():
        msg = error(values.load_values_file, str(tmp_path / f"{stem}.npz"))
        assert msg.startswith(f"--values {tmp_path / stem}.npz") and words in msg, msg


def test_npz_that_unpacks_past_the_cap(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("x.npy", npy_header((100_000,)) + bytes(800_000))
    (tmp_path / "bomb.npz").write_bytes(buf.getvalue())
    monkeypatch.setenv("GRADCLI_MAX_BYTES", "100000")
    msg = error(values.load_values_file, str(tmp_path / "bomb.npz"))
    assert "its arrays unpack to 800 KB; gradcli reads at most 100 KB" in msg


def test_values_file_naming_a_variable_twice(tmp_path):
    f = tmp_path / "v.json"
    f.write_text('{"x": 1, "y": 2, "x": 3}')
    assert error(values.load_values_file, str(f)) == \
        f"--values {f}: 'x' is given twice; give each name one value"
    f.write_text('{"x": [1, 2], "y": "@nope.npy"}')
    assert "y=@nope.npy: no such file" in error(values.load_values_file, str(f))


def test_write_atomic_leaves_the_old_file_on_failure(tmp_path):
    """files.write_atomic (behind dot -o, show -o, check --render/--html, descend --save):
    the new file whole, or the old one untouched and no temporary file left."""
    from gradcli import files

    target = tmp_path / "out.svg"
    files.write_atomic(target, lambda f: f.write(b"old"))
    assert target.read_bytes() == b"old"

    def half(f):
        f.write(b"new, half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(target, half)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.svg"]
    with pytest.raises(OSError):
        files.write_atomic(tmp_path / "no" / "such" / "dir.svg", lambda f: f.write(b"x"))
