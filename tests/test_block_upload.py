"""Blobs uploaded a block at a time, several blocks at once: whole, in order, or not at all."""

from __future__ import annotations

import io
import os

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContentSettings

from shared.storage import UPLOAD_BLOCK, UPLOAD_THREADS, upload_in_blocks


class _FailingStage:
    """A real blob client whose ``fail_at``-th stage_block fails as the service would."""

    def __init__(self, blob, fail_at: int) -> None:
        self._blob, self._fail_at, self.staged = blob, fail_at, 0

    def stage_block(self, *args, **kwargs):
        self.staged += 1
        if self.staged == self._fail_at:
            raise HttpResponseError("stage failed")
        return self._blob.stage_block(*args, **kwargs)

    def commit_block_list(self, *args, **kwargs):
        return self._blob.commit_block_list(*args, **kwargs)


def test_a_body_of_many_blocks_arrives_whole_and_in_order(container):
    body = os.urandom(UPLOAD_BLOCK * (UPLOAD_THREADS * 2) + 12_345)  # more blocks than threads
    blob = container.get_blob_client("state/gen-1.parquet")
    upload_in_blocks(blob, io.BytesIO(body), ContentSettings(content_type="application/x"))

    assert blob.download_blob().readall() == body
    assert blob.get_blob_properties().content_settings.content_type == "application/x"
    committed, _ = blob.get_block_list("committed")
    assert len(committed) == UPLOAD_THREADS * 2 + 1


def test_a_failed_block_leaves_the_blob_as_it_was(container):
    blob = container.get_blob_client("state/current.parquet")
    blob.upload_blob(b"the previous generation")
    failing = _FailingStage(blob, fail_at=UPLOAD_THREADS + 1)

    with pytest.raises(HttpResponseError, match="stage failed"):
        upload_in_blocks(failing, io.BytesIO(os.urandom(UPLOAD_BLOCK * 8)))

    assert blob.download_blob().readall() == b"the previous generation"
    assert failing.staged < 8  # it stopped reading and staging once a block failed
