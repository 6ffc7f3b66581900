def test_blob_round_trip_through_azurite(container):
    container.upload_blob("a/b.txt", b"hello")
    assert container.download_blob("a/b.txt").readall() == b"hello"
    assert [b.name for b in container.list_blobs(name_starts_with="a/")] == ["a/b.txt"]
