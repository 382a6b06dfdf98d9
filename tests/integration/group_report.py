"""What a consumer group looks like right now, for the failure message of a test that waited for its commits.

Read from both sides: the broker (the group as it reports it, each partition's committed offset and true end)
and each live worker's metrics (the partitions it holds, how far it read them and finished them).
"""

from __future__ import annotations

from typing import Sequence

from confluent_kafka.admin import AdminClient

from stream.commit_watch import GroupOffsets
from tests.integration.workers import WorkerProcess, scrape


def group_report(bootstrap: str, group: str, topic: str, workers: Sequence[WorkerProcess] = ()) -> str:
    """A few lines: members and assignment, then per partition committed / end / read / finished."""
    lines = [f"group {group}: {_members(bootstrap, group)}"]
    probe = GroupOffsets({"bootstrap.servers": bootstrap}, group, [topic], timeout_s=10)
    try:
        commits = probe.read()
    finally:
        probe.close()
    held = {w.proc.pid: _held(w) for w in workers if w.alive()}
    for (_topic, partition), seen in sorted(commits.items()):
        here = "; ".join(f"worker {pid} read {view[partition].get('read')} finished "
                         f"{view[partition].get('finished')} stalled {view[partition].get('stalled')}"
                         for pid, view in held.items() if partition in view) or "held by no live worker"
        lines.append(f"  {topic}[{partition}] committed {seen.committed} end {seen.end} lag {seen.lag}: {here}")
    return "\n".join(lines)


def _members(bootstrap: str, group: str) -> str:
    try:
        description = AdminClient({"bootstrap.servers": bootstrap}).describe_consumer_groups([group])[group].result(10)
    except Exception as exc:  # noqa: BLE001 - a report must not hide the failure it reports on
        return f"(describe failed: {exc})"
    members = [f"{m.client_id}@{m.host} {sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions)}"
               for m in description.members]
    return f"state {description.state}, members {members or '(the broker reports none)'}"


def _held(worker: WorkerProcess) -> dict[int, dict[str, float]]:
    """A worker's view of the partitions it holds, from its metrics: {partition: {read, finished, stalled}}."""
    samples = scrape(worker.metrics_port)
    view: dict[int, dict[str, float]] = {}
    for (name, labels), value in samples.items():
        tags = dict(labels)
        if name == "metarec_partition_offset" and tags.get("kind") in {"read", "finished"}:
            view.setdefault(int(tags["partition"]), {})[tags["kind"]] = value
    for (name, labels), value in samples.items():
        tags = dict(labels)
        if name == "metarec_commit_stalled" and int(tags["partition"]) in view:
            view[int(tags["partition"])]["stalled"] = value
    return view
