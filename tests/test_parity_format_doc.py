"""FORMAT.md §13 and §14 against the code: the alias and metadata tables list what encode writes."""

from __future__ import annotations

import msgpack

from fsmount.commit import attachments, registry
from fsmount.format.records import Attachment, DatasetAlias, MetadataIndex
from tests.test_format_doc import DOC, section, table_keys


def test_alias_table_lists_exactly_the_keys_encode_writes_in_order() -> None:
    written = list(msgpack.unpackb(DatasetAlias("q", "m", ("0" * 32,), 1.5).encode(), raw=False))
    assert table_keys(section("13. Dataset aliases")) == written


def test_metadata_table_lists_exactly_the_keys_encode_writes_in_order() -> None:
    idx = MetadataIndex("0" * 32, {"a": Attachment("a", "json", 2, b"\x00" * 32)}, 1.5)
    assert table_keys(section("14. Metadata attachments")) == list(msgpack.unpackb(idx.encode(), raw=False))


def test_the_limits_and_key_names_the_doc_gives() -> None:
    assert attachments.MAX_ATTACHMENT_BYTES == 67_108_864 and "67,108,864 bytes" in DOC
    assert registry.MAX_ALIAS_HOPS == 16 and "at most 16" in section("13. Dataset aliases")
    for prefix in (registry.ALIASES_PREFIX, attachments.INDEX_PREFIX, attachments.BLOB_PREFIX):
        assert f"`{prefix}" in section("2. Store URLs")
