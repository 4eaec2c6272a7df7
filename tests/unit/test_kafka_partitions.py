"""Where a keyed record goes: the producer's own partitioner's choice, whoever computes it."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from shared.kafka import key_hash


def test_a_keys_partition_is_the_default_partitioners() -> None:
    partitioner = DefaultPartitioner()
    keys = [f"c{i}".encode() for i in range(2000)] + ["ü-ñ".encode(), b"", b"\x00\xff" * 40]
    for count in (1, 3, 12, 50):
        partitions = list(range(count))
        for key in keys + keys:  # the second time from what is remembered
            assert partitions[key_hash(key) % count] == partitioner(key, partitions, partitions)
