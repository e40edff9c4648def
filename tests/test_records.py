"""`interpreter.records`: `descendants` answers from a sorted index of the record paths (resume calls it
for every reused node), and must give exactly what a scan of every record with the old prefix test gave:
the same paths, in the dict's order, after any mix of adds and removes."""

from __future__ import annotations

import copy
import pickle
import random

from interpreter import store as s
from interpreter.records import NodeRecord, Records, _forget_descendants, build_records, descendants


def _brute(records: dict[str, NodeRecord], path: str) -> list[tuple[str, NodeRecord]]:
    """The definition `descendants` had before the index: a scan with a string-prefix test."""
    return [(k, r) for k, r in records.items() if k.startswith(path + "/") or k.startswith(path + "[")]


TRICKY = [
    "b/a/x",
    "a",
    "a/bc",
    "a/b",
    "ab",
    "a/b/c",
    "a[10]/b",
    "a[1]",
    "a[1]/b",
    "a[1]/b[2]/c",
    "a[1][2]",
    "a/b[3]/c",
    "a/b[3]",
    "a-b",
    "a.b",
    "a0",
    "a\\",
    "aZ",
    "a/",
    "a[",
    "a/b/",
    "a/é",
    "a/\U0010ffff",
    "a[\U0010ffff",
    "a\U0010ffff",
    "b",
    "b[0]/a",
    "loop",
    "loop[0]/body/x",
    "loop[0]/body",
    "loop[1]/body/x",
    "loop2[0]/body",
    "loopy/x",
]

QUERIES = sorted({*TRICKY, "", "x", "a[1", "a[10", "a/b[", "loop[0]/bod", "loop[0", "/", "[", "\U0010ffff"})


def _records(paths: list[str]) -> Records:
    records = Records()
    for i, path in enumerate(paths):
        records[path] = NodeRecord(seq=i)
    return records


def _check_all(records: Records) -> None:
    plain = dict(records)
    for path in [*QUERIES, *records]:
        assert descendants(records, path) == _brute(plain, path), path


def test_tricky_paths_match_the_scan() -> None:
    records = _records(TRICKY)
    _check_all(records)
    assert [k for k, _ in descendants(records, "a/b")] == ["a/b/c", "a/b[3]/c", "a/b[3]", "a/b/"]
    assert [k for k, _ in descendants(records, "a[1]")] == ["a[1]/b", "a[1]/b[2]/c", "a[1][2]"]
    assert [k for k, _ in descendants(records, "loop")] == [
        "loop[0]/body/x",
        "loop[0]/body",
        "loop[1]/body/x",
    ]
    assert descendants(records, "a/bc") == []  # `a/b` is a prefix of `a/bc` but not its parent
    assert "a/bc" not in dict(descendants(records, "a/b"))
    assert "a[10]/b" not in dict(descendants(records, "a[1]"))


def test_insertion_order_not_sorted_order() -> None:
    paths = ["p[2]/z", "p/y", "p[10]/a", "p[1]/b", "p/a", "p[0]"]
    records = _records(paths)
    assert [k for k, _ in descendants(records, "p")] == paths
    # a path added again after being removed goes to the end, as in a dict
    del records["p/y"]
    records["p/y"] = NodeRecord()
    records["p[2]/z"] = NodeRecord(seq=99)  # re-setting a present path keeps its place
    assert [k for k, _ in descendants(records, "p")] == ["p[2]/z", "p[10]/a", "p[1]/b", "p/a", "p[0]", "p/y"]
    assert descendants(records, "p")[0][1].seq == 99


def test_plain_dict_still_works() -> None:
    plain = {p: NodeRecord() for p in TRICKY}
    for path in QUERIES:
        assert descendants(plain, path) == _brute(plain, path)
    _forget_descendants(plain, "a")
    assert [k for k in plain if k.startswith(("a/", "a["))] == []
    assert "a" in plain and "ab" in plain and "a0" in plain


def test_index_follows_mutations() -> None:
    records = _records(TRICKY)
    _check_all(records)  # builds the index
    records["a/b/d"] = NodeRecord()
    records["a[1]/b/new"] = NodeRecord()
    del records["a/b[3]"]
    _check_all(records)
    _forget_descendants(records, "a/b")
    assert descendants(records, "a/b") == []
    assert "a/bc" in records and "a/b" in records
    _check_all(records)
    records.pop("a[1]")
    records.pop("not there", None)
    _check_all(records)
    records.update({"a/b/z": NodeRecord(), "q[0]": NodeRecord()})
    _check_all(records)
    records.setdefault("a/b/y", NodeRecord())
    _check_all(records)
    records |= {"a[7]": NodeRecord()}
    _check_all(records)
    records.popitem()
    _check_all(records)
    records.clear()
    _check_all(records)
    records["a/x"] = NodeRecord()
    assert [k for k, _ in descendants(records, "a")] == ["a/x"]


def test_random_operations_match_a_plain_dict() -> None:
    rng = random.Random(7)
    parts = ["a", "b", "ab", "a0", "x[1]", "x[10]", "x[1][2]", "a\\", "é"]

    def path() -> str:
        out = rng.choice(parts)
        for _ in range(rng.randrange(3)):
            out += rng.choice(["/", "/", "["]) + rng.choice(parts)
        return out

    for _ in range(20):
        records, model = Records(), {}
        for _ in range(300):
            p = path()
            op = rng.random()
            if op < 0.5:
                rec = NodeRecord(seq=rng.randrange(1000))
                records[p] = rec
                model[p] = rec
            elif op < 0.65 and model:
                victim = rng.choice(list(model))
                del records[victim]
                del model[victim]
            elif op < 0.75:
                _forget_descendants(records, p)
                _forget_descendants(model, p)
            else:
                assert descendants(records, p) == _brute(model, p)
            assert list(records.items()) == list(model.items())
        for p in [*model, *(path() for _ in range(50))]:
            assert descendants(records, p) == _brute(model, p)


def test_copies_keep_working() -> None:
    records = _records(TRICKY)
    descendants(records, "a")  # an index to (not) copy
    for other in (
        records.copy(),
        copy.copy(records),
        copy.deepcopy(records),
        pickle.loads(pickle.dumps(records)),
    ):
        assert isinstance(other, Records)
        assert list(other) == list(records)
        other["a/new"] = NodeRecord()
        del other["a/b"]
        _check_all(other)
        _check_all(records)
        assert "a/new" not in records and "a/b" in records


def _event(seq: int, path: str, kind: str, payload: object = None) -> s.Event:
    return s.Event("r", seq, "2024-01-01T00:00:00+00:00", path, kind, None, payload or {}, "", "")


def test_build_records_retry_forgets_only_the_subtree() -> None:
    events = [
        _event(1, "r", s.STEP_STARTED),
        _event(2, "r/a", s.STEP_STARTED),
        _event(3, "r/a", s.STEP_COMPLETED, {"output": 1}),
        _event(4, "r[0]/b", s.STEP_COMPLETED, {"output": 2}),
        _event(5, "rr/a", s.STEP_COMPLETED, {"output": 3}),
        _event(6, "r0", s.STEP_COMPLETED, {"output": 4}),
        _event(7, "r", s.STEP_RETRYING, {"attempt": 1, "error": {"code": "x"}}),
        _event(8, "r/c", s.STEP_COMPLETED, {"output": 5}),
        _event(9, "r[1]/b", s.STEP_COMPLETED, {"output": 6}),
        _event(10, "r", s.STEP_RETRYING, {"attempt": 2, "error": {"code": "x"}}),
        _event(11, "r/d", s.STEP_COMPLETED, {"output": 7}),
        _event(12, "r", s.STEP_COMPLETED, {"output": 8}),
    ]
    records = build_records(events)
    assert isinstance(records, Records)
    assert list(records) == ["r", "rr/a", "r0", "r/d"]
    assert records["r"].attempts_failed == 2 and records["r"].status == "completed"
    assert [(k, r.output) for k, r in descendants(records, "r")] == [("r/d", 7)]
    _check_all(records)


def test_wide_fan_out() -> None:
    """A for_each of many items, each with a couple of steps: every subtree is exactly its own."""
    records = Records()
    n = 1200
    records["each"] = NodeRecord()
    for i in range(n):
        records[f"each[{i}]/a"] = NodeRecord(seq=i)
        records[f"each[{i}]/b"] = NodeRecord(seq=i)
    plain = dict(records)
    assert len(descendants(records, "each")) == 2 * n
    for i in (0, 1, 9, 10, 11, 99, 100, 119, 120, 1199):
        got = descendants(records, f"each[{i}]")
        assert got == _brute(plain, f"each[{i}]")
        assert [k for k, _ in got] == [f"each[{i}]/a", f"each[{i}]/b"]
