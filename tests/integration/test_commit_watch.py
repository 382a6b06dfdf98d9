"""The commit watch's view of the group, read from the embedded broker: committed offsets and true ends of every
partition, including those nobody in the group consumes."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from stream.commit_watch import GroupOffsets, PartitionCommit
from tests.integration.group_report import group_report
from tests.integration.kafka_helpers import produce

pytestmark = pytest.mark.integration


@pytest.mark.timeout(120)
def test_the_probe_reads_each_partition_s_commit_and_true_end_without_joining_the_group(broker, topic_prefix):
    topic, group = f"{topic_prefix}in", f"{topic_prefix}group"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(topic, 3, 1)]).values():
        future.result(30)
    # one produce batch per partition: the broker's ListOffsets reports 1 as the end of partition 0, not 10
    produce(broker.bootstrap, topic, [(b"k", b"v")] * 10, partition=0)
    produce(broker.bootstrap, topic, [(b"k", b"v")] * 5, partition=1)
    committer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committer.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 5)], asynchronous=False)
    finally:
        committer.close()

    probe = GroupOffsets({"bootstrap.servers": broker.bootstrap}, group, [topic], timeout_s=30)
    try:
        first = probe.read()
        again = probe.read()  # the probe is reused every few seconds: it must read afresh each time
    finally:
        probe.close()
    assert first == again == {
        (topic, 0): PartitionCommit(committed=4, end=10),  # 6 events wait behind the commit
        (topic, 1): PartitionCommit(committed=5, end=5),  # all committed
        (topic, 2): PartitionCommit(committed=None, end=0),  # empty, never committed
    }
    assert [first[(topic, p)].lag for p in range(3)] == [6, 0, 0]
    report = group_report(broker.bootstrap, group, topic)  # what a test that timed out waiting prints
    assert f"{topic}[0] committed 4 end 10 lag 6: held by no live worker" in report, report
