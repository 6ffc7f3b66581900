from shared.dedupe import SeenEmails


def test_add_reports_new_and_seen_addresses_across_growth():
    seen = SeenEmails(capacity=4)
    emails = [f"user{i}@example.com" for i in range(5000)]
    assert all(seen.add(e) for e in emails)
    assert not any(seen.add(e) for e in emails)
    assert len(seen) == 5000
    assert "user42@example.com" in seen
    assert "nobody@example.com" not in seen


def test_memory_is_a_flat_table_of_hashes():
    seen = SeenEmails()
    for i in range(100_000):
        seen.add(f"u{i}@x.io")
    # at most 16 bytes per address (load factor kept at or under one half)
    assert seen.nbytes <= 16 * 100_000 * 2
