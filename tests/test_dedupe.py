import numpy as np
import xxhash

from shared.dedupe import SeenKeys, email_hash


def keys(emails: list[str]) -> np.ndarray:
    return np.array([email_hash(e) for e in emails], dtype=np.uint64)


def first_seen(block: np.ndarray, reference: set[int]) -> list[bool]:
    """What SeenKeys must answer, from a set; adds the block's keys to ``reference``."""
    expected = []
    for k in block.tolist():
        expected.append(k not in reference)
        reference.add(k)
    return expected


def test_first_occurrence_in_input_order_wins_within_and_across_blocks():
    seen = SeenKeys()
    first = seen.first_seen(keys(["a@x.io", "b@x.io", "a@x.io", "c@x.io", "b@x.io"]))
    assert first.tolist() == [True, True, False, True, False]
    second = seen.first_seen(keys(["c@x.io", "d@x.io", "d@x.io", "a@x.io"]))
    assert second.tolist() == [False, True, False, False]
    assert len(seen) == 4
    assert "d@x.io" in seen and "e@x.io" not in seen


def test_many_blocks_keep_few_sorted_runs_and_answer_like_a_set():
    rng = np.random.default_rng(7)
    seen, reference = SeenKeys(), set()
    for _ in range(300):
        block = rng.integers(0, 200_000, size=1_000, dtype=np.uint64)
        assert seen.first_seen(block).tolist() == first_seen(block, reference)
    assert len(seen) == len(reference)
    assert len(seen._runs) <= 20  # about log2(n / block)
    assert seen.nbytes == 8 * len(reference)  # 8 bytes per address


def test_the_key_is_xxh3_of_the_utf8_address_stable_across_processes():
    assert email_hash("zoë@example.com") == xxhash.xxh3_64_intdigest("zoë@example.com".encode())
    # Pinned: the sync state persists these keys, so they must never change.
    assert email_hash("a@example.com") == xxhash.xxh3_64_intdigest(b"a@example.com")


def test_runs_stop_growing_at_the_cap_and_still_answer_like_a_set():
    rng = np.random.default_rng(11)
    seen, reference = SeenKeys(run_cap=4_000), set()
    for _ in range(100):
        block = rng.integers(0, 60_000, size=500, dtype=np.uint64)
        assert seen.first_seen(block).tolist() == first_seen(block, reference)
    assert max(run.size for run in seen._runs) <= 4_000
    assert all(np.all(np.diff(run.astype(np.int64)) != 0) for run in seen._runs)
    assert seen.nbytes == 8 * len(reference)
