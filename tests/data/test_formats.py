"""Reading every source format into records, and the errors that say where and how to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flextrain.data.formats import (
    UnreadableLine,
    detect_source_format,
    read_records,
    read_source,
)
from flextrain.data.registry import DatasetFormatError, DatasetNotFoundError

ROWS = [{"text": "good film", "label": "pos"}, {"text": "dull", "label": "neg"}]


# -- detection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.jsonl", "jsonl"),
        ("a.NDJSON", "jsonl"),
        ("a.json", "json"),
        ("a.csv", "csv"),
        ("a.tsv", "csv"),
        ("a.parquet", "parquet"),
        ("a.txt", "text"),
        ("a.text", "text"),
        ("a.md", "text"),
    ],
)
def test_detect_by_suffix(tmp_path: Path, name: str, fmt: str) -> None:
    assert detect_source_format(tmp_path / name) == fmt


def test_detect_unknown_suffix_names_it_and_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match=r"unsupported suffix \.xlsx.*\.jsonl.*\.parquet"):
        detect_source_format(tmp_path / "data.xlsx")


def test_detect_folders(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    assert detect_source_format(tmp_path / "docs") == "text_folder"
    for marker in ("dataset_info.json", "state.json", "dataset_dict.json"):
        folder = tmp_path / marker.split(".")[0]
        folder.mkdir()
        (folder / marker).write_text("{}")
        assert detect_source_format(folder) == "hf_disk"


# -- reading ---------------------------------------------------------------------------


def test_jsonl_skips_blank_lines_and_a_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in ROWS).encode() + b"\n\n")
    assert read_records(path) == ROWS


@pytest.mark.parametrize(
    "payload",
    [
        ROWS,
        {"data": ROWS},
        {"text": ["good film", "dull"], "label": ["pos", "neg"]},
    ],
    ids=["list", "data-key", "columns"],
)
def test_json_forms(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps(payload))
    assert read_records(path) == ROWS


def test_json_column_named_data_is_a_column(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": ["a", "b"], "label": [1, 2]}))
    assert read_records(path) == [{"data": "a", "label": 1}, {"data": "b", "label": 2}]


def test_csv_with_bom_quotes_and_short_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b'\xef\xbb\xbftext,label\n"good, really",pos\n\ndull\n')
    assert read_records(path) == [
        {"text": "good, really", "label": "pos"},
        {"text": "dull", "label": None},
    ]


def test_tsv_uses_tabs(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\ngood, film\tpos\n")
    assert read_records(path) == [{"text": "good, film", "label": "pos"}]


def test_text_one_record_per_non_empty_line(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("first line\n\n   \nsecond  line \n")
    assert read_records(path) == [{"text": "first line"}, {"text": "second  line "}]


def test_text_folder_one_document_per_file_sorted(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "b.md").write_text("# B\n\nbody")
    (folder / "a.txt").write_text("alpha\nmore")
    (folder / "notes.csv").write_text("ignored")
    (folder / ".hidden.txt").write_text("ignored")
    assert read_records(folder) == [
        {"text": "alpha\nmore", "source": "a.txt"},
        {"text": "# B\n\nbody", "source": "b.md"},
    ]


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert read_records(path) == ROWS


def test_hf_disk_dataset_and_dataset_dict_train_split(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "one"))
    assert detect_source_format(tmp_path / "one") == "hf_disk"
    assert read_records(tmp_path / "one") == ROWS

    DatasetDict(
        train=Dataset.from_list(ROWS), test=Dataset.from_list([{"text": "x", "label": "y"}])
    ).save_to_disk(str(tmp_path / "dict"))
    assert read_records(tmp_path / "dict") == ROWS


def test_hf_disk_without_train_split_names_the_splits(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    ds = Dataset.from_list(ROWS)
    DatasetDict(validation=ds, test=ds).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(DatasetFormatError, match=r"splits \['validation', 'test'\] and no 'train'"):
        read_records(tmp_path / "dict")


def test_format_override(tmp_path: Path) -> None:
    path = tmp_path / "data.log"
    path.write_text('{"text": "a"}\n')
    assert read_records(path, "jsonl") == [{"text": "a"}]
    with pytest.raises(DatasetFormatError, match="needs a folder"):
        read_records(path, "text_folder")


# -- errors ----------------------------------------------------------------------------


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        read_records(tmp_path / "nope.jsonl")


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b",}\n')
    with pytest.raises(DatasetFormatError, match=r"line 3 is not valid JSON.*Fix: one complete"):
        read_records(path)


def test_jsonl_value_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n["b"]\n')
    with pytest.raises(DatasetFormatError, match=r"'d.jsonl' line 2 is a list, not an object"):
        read_records(path)


def test_json_value_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": "b"}, "c"]))
    with pytest.raises(DatasetFormatError, match="record 3 is a string, not an object"):
        read_records(path)


def test_json_invalid_suggests_jsonl_for_one_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('{"text": "a"}\n{"text": "b"}\n')
    with pytest.raises(DatasetFormatError, match=r"line 2, column 1.*rename the file to \.jsonl"):
        read_records(path)


def test_json_single_object_and_ragged_columns(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"text": "only one"}))
    with pytest.raises(DatasetFormatError, match="single object, not records"):
        read_records(path)
    path.write_text(json.dumps({"text": ["a", "b"], "label": ["x"]}))
    with pytest.raises(DatasetFormatError, match="columns of different lengths"):
        read_records(path)


def test_non_utf8_names_the_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(DatasetFormatError, match=r"not UTF-8.*byte offset 8 \(line 2\).*UTF-8"):
        read_records(path)


def test_non_utf8_offset_counts_the_bom(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbftext\n\xff\n")
    with pytest.raises(DatasetFormatError, match=r"byte offset 8 \(line 2\)"):
        read_records(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("d.jsonl", "\n\n"), ("d.json", "[]"), ("d.csv", "text,label\n"), ("d.txt", " \n")],
)
def test_empty_file_has_no_records(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetFormatError, match="has no records"):
        read_records(path)


def test_empty_text_folder_has_no_records(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError, match="has no records"):
        read_records(tmp_path)


def test_csv_row_with_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,pos\nb, c,neg\n")
    with pytest.raises(DatasetFormatError, match=r"'d.csv' line 3 has 3 fields.*header has 2"):
        read_records(path)


def test_csv_repeated_header(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,text\na,b\n")
    with pytest.raises(DatasetFormatError, match=r"repeats column\(s\) \['text'\]"):
        read_records(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DatasetFormatError, match="not a readable Parquet file"):
        read_records(path)


# Found by fuzzing the upload endpoint: both crashed later (a 500) instead of being
# refused as a bad file.
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("lone.jsonl", '{"text": "fine"}\n{"text": "half a pair \\ud800"}\n'),
        ("lone.json", '[{"text": "low half \\udfff first"}]'),
        ("key.jsonl", '{"\\ud800": "in a key"}\n'),
    ],
)
def test_a_lone_surrogate_escape_is_a_format_error(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetFormatError, match="surrogate pair") as caught:
        read_records(path)
    assert name in str(caught.value)
    if name == "lone.jsonl":
        assert "line 2" in str(caught.value)


def test_a_surrogate_pair_escape_is_one_character(tmp_path: Path) -> None:
    path = tmp_path / "emoji.jsonl"
    path.write_text('{"text": "smile \\ud83d\\ude00"}\n')
    assert read_records(path) == [{"text": "smile \U0001f600"}]


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_nesting_too_deep_to_parse_is_a_format_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"deep{suffix}"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DatasetFormatError, match="too deeply"):
        read_records(path)


# -- issue 19: a linter reads to the end -------------------------------------------------


def test_jsonl_reading_goes_past_every_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b",}\n\n["c"]\n{"text": "d"}\nnot json\n')
    source = read_source(path)
    assert source.records == [{"text": "a"}, {"text": "d"}]
    assert source.lines == [1, 5]
    assert source.unreadable == [
        UnreadableLine(
            2,
            "is not valid JSON (Expecting property name enclosed in double quotes, "
            "column 14). Fix: one complete JSON object per line.",
        ),
        UnreadableLine(
            4, 'is a list, not an object. Fix: one JSON object per line, like {"text": "..."}.'
        ),
        UnreadableLine(
            6,
            "is not valid JSON (Expecting value, column 1). Fix: one complete JSON object "
            "per line.",
        ),
    ]
    with pytest.raises(DatasetFormatError) as caught:
        read_records(path)
    assert str(caught.value).splitlines() == [
        "'d.jsonl' has 3 lines that are not records:",
        *(f"  - {u}" for u in source.unreadable),
    ]


def test_csv_rows_with_extra_fields_are_all_listed_with_their_first_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"two\nlines",pos\nb,c,neg\nd,neg\ne,f,g,h\n')
    source = read_source(path)
    assert source.records == [{"text": "two\nlines", "label": "pos"}, {"text": "d", "label": "neg"}]
    assert source.lines == [2, 5]
    assert [(u.line, u.message.split(".")[0]) for u in source.unreadable] == [
        (4, "has 3 fields but the header has 2"),
        (6, "has 4 fields but the header has 2"),
    ]


def test_unreadable_lines_past_50_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("[1]\n" * 53)
    with pytest.raises(DatasetFormatError) as caught:
        read_records(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == "'d.jsonl' has 53 lines that are not records:"
    assert len(lines) == 1 + 50 + 1
    assert lines[50] == (
        '  - line 50 is a list, not an object. Fix: one JSON object per line, like {"text": "..."}.'
    )
    assert lines[-1] == "  … and 3 more"
