"""The commit watch on the embedded broker: its view of the group (committed offsets and true ends of every
partition, including those nobody consumes), and a stall of a partition another worker holds, seen and cleared."""

from __future__ import annotations

import signal

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.decode import encode
from schemas.records import Interaction
from stream.commit_watch import GroupOffsets, PartitionCommit
from tests.integration.group_report import group_report
from tests.integration.kafka_helpers import produce
from tests.integration.workers import (
    WorkerProcess,
    WorkerSpec,
    committed_offsets,
    end_offsets,
    read_to_end,
    scrape,
    wait_until,
)

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


def _series(port: int, name: str, **match: str) -> dict[int, float]:
    """One metric's value per partition, from a worker's /metrics."""
    out: dict[int, float] = {}
    for (metric, labels), value in scrape(port).items():
        tags = dict(labels)
        if metric == name and all(tags.get(k) == v for k, v in match.items()):
            out[int(tags["partition"])] = value
    return out


@pytest.mark.timeout(360)
def test_a_partition_of_a_hung_worker_is_reported_by_the_other_and_clears_once_it_takes_over(
        broker, topic_prefix, tmp_path, checkpoint):
    """Worker B hangs (SIGSTOP) while events keep coming: worker A, which does not hold B's partitions, reports
    them stalled (``metarec_commit_stalled`` 1, a log line); once the group gives them to A and A commits,
    the gauge is 0 again, with no one restarting anything."""
    quick = {"METAREC_COMMIT_STALL_S": "2", "METAREC_COMMIT_WATCH_INTERVAL_S": "0.5"}
    spec_a = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "a", extra_env=quick).create_topics()
    spec_b = WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "b", extra_env=quick)
    settings = spec_a.settings()
    users = [f"user-{k}" for k in range(40)]

    def send(round_: int) -> None:
        events = [Interaction(event_id=f"{u}-{round_}-{n}", user_id=u, item_id=f"i{(k + n) % 30}", type="click",
                              ts=1_700_000_000.0 + 100 * round_ + n) for n in range(3) for k, u in enumerate(users)]
        produce(broker.bootstrap, settings.interactions_topic, [(e.user_id.encode(), encode(e)) for e in events])

    def all_committed() -> bool:
        ends = end_offsets(read_to_end(broker.bootstrap, settings.interactions_topic))
        return committed_offsets(broker.bootstrap, settings.app_id, settings.interactions_topic, 4) == ends

    a = WorkerProcess(spec_a, tmp_path / "a.log")
    b = WorkerProcess(spec_b, tmp_path / "b.log")
    try:
        send(0)

        def split() -> bool:  # each holds some partitions, together all: the group is formed
            held_a = set(_series(a.metrics_port, "metarec_partition_offset", kind="read"))
            held_b = set(_series(b.metrics_port, "metarec_partition_offset", kind="read"))
            return bool(held_a) and bool(held_b) and held_a | held_b == {0, 1, 2, 3} and not held_a & held_b

        wait_until(lambda: all_committed() and split(), 180, "both workers to hold partitions, all committed",
                   alive=[a, b])
        held_b = set(_series(b.metrics_port, "metarec_partition_offset", kind="read"))
        wait_until(lambda: set(_series(a.metrics_port, "metarec_commit_stalled").values()) == {0.0}, 30,
                   "worker A to see no stall", alive=[a, b])

        b.proc.send_signal(signal.SIGSTOP)  # hung: holds its partitions until its session times out
        send(1)
        wait_until(lambda: any(_series(a.metrics_port, "metarec_commit_stalled").get(p) == 1 for p in held_b), 60,
                   f"worker A to report worker B's partitions {sorted(held_b)} stalled", alive=[a])
        wait_until(lambda: all_committed()
                   and set(_series(a.metrics_port, "metarec_commit_stalled").values()) == {0.0}, 120,
                   "worker A to take over, commit, and clear the stall", alive=[a])
    finally:
        if b.alive():
            b.proc.send_signal(signal.SIGCONT)
        a_status, b_status = a.stop(), b.stop()
    text = a.log_text()
    assert "has not moved" in text and "held by another member or none" in text and "moves again" in text
    assert a_status == 0, text[-3000:]
    assert b_status == 0, b.log_text()[-3000:]  # B woke up to a group that had moved on, and left it cleanly
