import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.mixing import _fs
from components.reading import read_table, total_bytes


def _files(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(pa.table({"sample_id": ["a0", "a1"], "answers": pa.array([None, None], pa.null())}), a)
    pq.write_table(pa.table({"sample_id": ["b0", "b1"], "answers": [["yes"], ["no", "maybe"]]}), b)
    return [str(a), str(b)]


def test_files_with_a_null_typed_column_read_as_one_table(tmp_path):
    files = _files(tmp_path)
    fs, _ = _fs(str(tmp_path))
    table = read_table(files, fs)
    assert table.column("sample_id").to_pylist() == ["a0", "a1", "b0", "b1"]
    assert table.column("answers").to_pylist() == [None, None, ["yes"], ["no", "maybe"]]
    assert total_bytes(files, fs) == sum((tmp_path / n).stat().st_size for n in ("a.parquet", "b.parquet"))


def test_only_the_listed_sample_ids_and_columns_are_kept(tmp_path):
    fs, _ = _fs(str(tmp_path))
    table = read_table(_files(tmp_path), fs, columns=["sample_id"], sample_ids=["b1", "a0", "zz"])
    assert table.column_names == ["sample_id"]
    assert table.column("sample_id").to_pylist() == ["a0", "b1"]


def test_no_files_is_a_clear_error(tmp_path):
    fs, _ = _fs(str(tmp_path))
    with pytest.raises(ValueError, match="no Parquet files"):
        read_table([], fs)
