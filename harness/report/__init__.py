"""``python -m harness.report --study NAME [--storage URL] [--out DIR]``: a study's report from the database
alone: ``index.html``, ``trials.csv``, ``summary.csv`` (the effects table) and PNG plots (default DIR:
``reports/NAME/``). See docs/reports.md for what the report shows and how its statistics are computed."""

from __future__ import annotations

from pathlib import Path

from harness.storage import open_store
from harness.study import slug


def render_report(storage: str | None, study: str, out: str | Path | None = None) -> Path:
    """Render ``study`` from the database at ``storage`` into ``out`` (default ``reports/<study>/``);
    returns the path of index.html. Unknown studies and missing databases raise ``UsageError``."""
    from harness.report.render import write_report

    store = open_store(storage, create=False)
    target = Path(out) if out is not None else Path("reports") / slug(study)
    return write_report(store, study, target)


__all__ = ["render_report"]
