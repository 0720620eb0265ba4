"""How a batch reports as it goes: one bar for the whole batch (jobs finished, with done / failed / running and
tqdm's ETA), fed by :func:`v2v.batch.run`'s events; ``--progress json`` writes the events themselves instead."""

from __future__ import annotations

ENDED = frozenset({"done", "failed", "skipped", "interrupted"})


class BatchBar:
    """``on_event`` for :func:`v2v.batch.run` that draws the batch's bar on stderr (when ``show``)."""

    def __init__(self, show: bool):
        self.show = show
        self.bar = None

    def __call__(self, event: dict) -> None:
        if event.get("event") == "batch" and event.get("jobs"):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=event["jobs"], desc="batch", unit="job", disable=not self.show, dynamic_ncols=True)
        if self.bar is None or event.get("event") != "job":  # jobs that failed before the batch began: no bar yet
            return
        if event.get("status") in ENDED:
            self.bar.update(1)
        counts = event.get("batch", {})
        self.bar.set_postfix_str(f"{counts.get('done', 0)} done, {counts.get('failed', 0)} failed, "
                                 f"{counts.get('running', 0)} running", refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def summary_line(summary) -> str:
    """``5 done, 1 failed, 0 skipped (2 already done, 1 failed before); record: OUT/batch.jsonl``."""
    before = []
    if summary.already_done:
        before.append(f"{len(summary.already_done)} already done")
    if summary.failed_before:
        before.append(f"{len(summary.failed_before)} failed before: --retry-failed retries them")
    extra = f" ({'; '.join(before)})" if before else ""
    return (f"{len(summary.done)} done, {len(summary.failed)} failed, {len(summary.skipped)} skipped{extra}; "
            f"record: {summary.ledger}")


def all_done(summary) -> bool:
    """Whether every job of the batch is done, in this run or an earlier one (a repeated job counts as done)."""
    return (not summary.failed and not summary.failed_before
            and all(r.status == "done" or (r.status == "skipped" and r.record.get("key")) for r in summary.results))
