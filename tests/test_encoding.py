from shared.definitions import parse_definition
from shared.encoding import MapperSpec, encoded_rows, worker_count
from shared.segments import Row
from tests.exports import COLUMNS, ROOT, definition_doc


def _spec() -> MapperSpec:
    definition = parse_definition(definition_doc("segments"))
    return MapperSpec(definition.mapping, COLUMNS, "NL", "Country", "test")


def _rows(n: int) -> list[Row]:
    rows = []
    for i in range(n):
        if i % 97 == 0:
            rows.append(Row("f.csv", i + 1, None, "expected 5 fields, found 4"))
            continue
        email = f" User{i}@Example.com " if i % 13 else f"broken{i}"
        phone = "+31612345678" if i % 3 == 0 else ("0612" if i % 5 == 0 else "")
        rows.append(Row("f.csv", i + 1, [str(i), email, "Zoë", phone, "NL"], None))
    return rows


def test_worker_processes_give_the_same_answers_in_the_same_order():
    rows = _rows(5_000)
    inline = list(encoded_rows(iter(rows), _spec(), workers=0))
    parallel = list(encoded_rows(iter(rows), _spec(), workers=2))
    assert [wire[0] for _, wire in parallel] == [r.line for r in rows]
    assert parallel == inline
    kinds = {
        "malformed" if wire[2] == "malformed_row" else "rejected" if wire[1] is None else "ok"
        for _, wire in inline
    }
    assert kinds == {"malformed", "rejected", "ok"}


def test_small_snapshots_are_encoded_inline():
    assert worker_count(1_000_000) == 0
    assert worker_count(10**9, requested=3) == 3
    assert (ROOT / "shared" / "__main__.py").read_text().count('__name__ == "__main__"') == 1


def test_lanes_give_the_same_rows_in_the_same_order_in_processes_or_here(
    container, storage_connection_string
):
    from devtools.sample_export import write_sample_export
    from shared.cdm import load_cdm
    from shared.encoding import PartitionSource, lane_rows
    from shared.segments import SegmentReader, find_latest_snapshot
    from shared.settings import StorageConnection

    write_sample_export(container, folder="F/K", segment="S", rows=7_000, partitions=3)
    entity = load_cdm(container, "F/K").entity("S")
    snapshot = find_latest_snapshot(container, "F/K", "S")
    with SegmentReader(container, snapshot, entity) as reader:
        columns = tuple(reader.columns)
    definition = parse_definition(definition_doc("segments"))
    spec = MapperSpec(definition.mapping, columns, "US", "Country", "test")
    connection = StorageConnection(
        setting="SEGMENTS_STORAGE", connection_string=storage_connection_string
    )
    source = PartitionSource(connection, container.container_name, entity, snapshot)
    here = list(lane_rows(source, spec, lanes=2, processes=False, container=container))
    there = list(lane_rows(source, spec, lanes=2, processes=True))
    assert here == there
    assert len(here) == 7_000
    # round-robin by chunk: lane 0 (partitions 1 and 3) and lane 1 (partition 2) alternate
    first_files = [f.rsplit("_", 1)[1] for f, _ in here[::2_000]]
    assert first_files[:2] == ["1.csv", "2.csv"]


def test_each_row_is_encoded_as_profile_reject_or_malformed():
    import orjson

    from shared.encoding import wire_rows

    rows = [
        Row("f.csv", 1, None, "expected 5 fields, found 4"),
        Row("f.csv", 2, ["2", "broken2", "Zoë", "", "NL"], None),
        Row("f.csv", 3, ["3", " Ada@Example.com ", "Zoë", "+31612345678", "NL"], None),
        Row("f.csv", 4, ["4", "bo@example.com", "B", "0612", "NL"], None),
    ]
    malformed, rejected, ok, bad_phone = wire_rows(_spec().build(), rows, COLUMNS.index("Email"))
    assert malformed == (1, None, "malformed_row", "expected 5 fields, found 4", "")
    assert rejected[:3] == (2, None, "invalid_email") and rejected[4] == "broken2"
    assert "broken2" not in rejected[3]  # the detail is masked; the raw e-mail rides apart
    line, email, part, phone_dropped, raw = ok
    assert (line, email, phone_dropped, raw) == (3, "ada@example.com", False, "")
    profile = orjson.loads(part)
    assert profile["type"] == "profile"
    assert profile["attributes"]["phone_number"] == "+31612345678"
    assert profile["attributes"]["first_name"] == "Zoë"
    assert bad_phone[1] == "bo@example.com" and bad_phone[3] is True
