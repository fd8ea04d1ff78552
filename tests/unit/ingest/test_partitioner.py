"""Ingest's partitioner is aiokafka's default (the Java client's), each key's hash kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.ingest.adapters.kafka_log import KeyPartitioner

# Utils.murmur2 of the Java client, from Kafka's own UtilsTest (testMurmur2); the Java
# client's partition of a keyed record is toPositive(murmur2(key)) % partitions
_JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_a_key_goes_where_the_java_client_sends_it_and_stays_there() -> None:
    partitioner, partitions = KeyPartitioner(kept=2), list(range(12))
    java = {k: (h & 0x7FFFFFFF) % 12 for k, h in _JAVA_MURMUR2.items()}
    assert len(set(java.values())) > 3  # the keys do not all land on one partition
    for _ in range(3):  # kept, forgotten (past `kept`), computed again: the same partition
        assert {k: partitioner(k, partitions, partitions) for k in java} == java


@given(st.binary(max_size=40), st.integers(min_value=1, max_value=64))
def test_every_key_and_partition_count_agrees_with_the_default(key: bytes, n: int) -> None:
    from aiokafka.partitioner import DefaultPartitioner

    partitions = list(range(n))
    expected = DefaultPartitioner()(key, partitions, partitions)
    partitioner = KeyPartitioner()
    assert partitioner(key, partitions, partitions) == expected
    assert partitioner(key, partitions, partitions) == expected  # from the kept hash


def test_a_message_without_a_key_goes_to_an_available_partition() -> None:
    assert KeyPartitioner()(None, [0, 1, 2], [2]) == 2
