"""Time spans: what each process of a run was doing when, for a timeline and a Chrome trace (Perfetto).

    start_spans(run_dir / "spans" / "rank_003.jsonl", process="rollout rank 3")
    with span("rollout"): ...                    # anywhere in that process
    flush_spans()                                # after each iteration: append to the file

Reading: `read_spans(run_dir)` -> rows {process, rank, phase, start, end} (seconds since the epoch);
`chrome_trace(rows)` -> the Trace Event JSON that chrome://tracing and ui.perfetto.dev open;
`busy_fractions(rows)` -> busy seconds / wall seconds per process. Phases ending in "wait" are not busy.
"""

import contextlib
import json
import time
from pathlib import Path

_recorder: dict | None = None  # this process's recorder, when it records (placed runs)


def start_spans(path: Path, process: str, rank: int) -> None:
    global _recorder
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _recorder = {"path": Path(path), "process": process, "rank": rank, "rows": []}


@contextlib.contextmanager
def span(phase: str):
    """Record (phase, start, end) of the block when this process records spans; free otherwise."""
    if _recorder is None:
        yield
        return
    start = time.time()
    try:
        yield
    finally:
        _recorder["rows"].append((phase, start, time.time()))


def flush_spans() -> None:
    """Append the spans recorded since the last flush to this process's file."""
    if _recorder is None or not _recorder["rows"]:
        return
    with _recorder["path"].open("a") as f:
        for phase, start, end in _recorder["rows"]:
            f.write(json.dumps({"process": _recorder["process"], "rank": _recorder["rank"], "phase": phase,
                                "start": start, "end": end}) + "\n")
    _recorder["rows"].clear()


def read_spans(run_dir: str | Path) -> list[dict]:
    rows = []
    for path in sorted((Path(run_dir) / "spans").glob("*.jsonl")):
        rows.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return rows


def chrome_trace(rows: list[dict]) -> dict:
    """Trace Event Format: one complete event ("ph": "X", microseconds) per span, one pid per process."""
    if not rows:
        return {"traceEvents": []}
    origin = min(r["start"] for r in rows)
    events = [{"name": "process_name", "ph": "M", "pid": r["rank"], "args": {"name": r["process"]}}
              for r in {r["rank"]: r for r in rows}.values()]
    events += [{"name": r["phase"], "ph": "X", "pid": r["rank"], "tid": 0, "ts": (r["start"] - origin) * 1e6,
                "dur": (r["end"] - r["start"]) * 1e6} for r in rows]
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def busy_fractions(rows: list[dict]) -> dict[str, float]:
    """Per process: seconds in busy phases / seconds from its first span's start to its last span's end."""
    out = {}
    for process in sorted({r["process"] for r in rows}):
        mine = [r for r in rows if r["process"] == process]
        wall = max(r["end"] for r in mine) - min(r["start"] for r in mine)
        busy = sum(r["end"] - r["start"] for r in mine if not r["phase"].endswith("wait"))
        out[process] = busy / wall if wall > 0 else 0.0
    return out
