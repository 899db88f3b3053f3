"""What ``facefix restore`` prints: the dry-run plan, ``--json`` lines, the per-face table, the summary."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from facefix.cli.common import debug_enabled, err, make_progress, out, shown
from facefix.restore.api import Executor, PlannedPhoto, RestoreSession, RestoreSummary
from facefix.restore.plan import NotRead
from facefix.restore.report import json_safe
from facefix.restore.runner import Outcome

#: Up to this many photos, the per-face table is printed (on stdout) at the end;
#: past it, use --json or --report.
TABLE_LIMIT = 200


def print_plan(planned: list[PlannedPhoto], json_out: bool) -> None:
    counts = {"restore": 0, "redo": 0, "skip": 0}
    for p in planned:
        counts[p.action] += 1
        if json_out:
            # markup=False: a name like "[red]x.jpg" is data, printed as it is
            out.print(json.dumps(json_safe({"file": str(p.job.source), "output": str(p.job.target),
                                            "action": p.action, "why": p.why}), ensure_ascii=False),
                      markup=False, highlight=False, soft_wrap=True)
        else:
            out.print(f"{p.action}\t{shown(p.job.source)}\t{shown(p.job.target)}\t{escape(p.why)}",
                      highlight=False, soft_wrap=True)
    err.print(f"dry run: {counts['restore']} to restore, {counts['redo']} to redo, "
              f"{counts['skip']} already done; nothing written", highlight=False)


def print_table(rows) -> None:
    """The per-face table (stdout) of a run of few photos."""
    table = Table("photo", "face", "person", "similarity", "restorer", "note")
    for result in rows:
        for f in result.faces:
            sim = "" if f.similarity is None else f"{f.similarity:.3f}"
            table.add_row(shown(result.source.name), str(f.index), escape(f.person or "generic"), sim,
                          escape(f.restorer or "-"), escape(f.skipped or f.reason))
        if not result.faces:
            table.add_row(shown(result.source.name), "-", "", "", "", "no face found")
    out.print(table)


def print_written(rows) -> None:
    """What each photo of a small run became."""
    for result in rows:
        if result.output is None:
            err.print(f"no face to restore in {shown(result.source)}; nothing written "
                      "(--copy-unchanged writes a copy)", highlight=False)
        else:
            err.print(f"wrote {shown(result.output)}" + "".join(f", {shown(p)}" for p in result.extra),
                      highlight=False)


def json_records(outcome: Outcome) -> list[dict]:
    """``--json`` lines of one photo: one per face for a restored photo, else one
    for the photo; every line says its photo's ``status``."""
    job, result = outcome.job, outcome.result
    if outcome.status == "restored" and result is not None:
        return [{**r, "status": "restored"} for r in result.records()]
    base = {"file": str(job.source), "face": None, "status": outcome.status}
    if outcome.status == "no face":
        output = result.output if result is not None else None
        return [{**base, "output": None if output is None else str(output)}]
    if outcome.status == "skipped":
        no_output = outcome.why == "done, no face"
        return [{**base, "output": None if no_output else str(job.target), "why": outcome.why}]
    if outcome.status == "not read":
        return [{**base, "output": None, "why": outcome.why}]
    return [{**base, "output": None, "error": outcome.error}]


def print_summary(summary: RestoreSummary) -> None:
    """The run's counts (stderr); files of the folders that are not photos facefix reads are counted apart."""
    c = summary.counts
    columns = ["photos", "restored", "no face", "already done", "failed", "faces restored", "time", "photos/min"]
    row = [str(summary.total), str(c["restored"]), str(c["no face"]), str(c["skipped"]), str(c["failed"]),
           str(summary.faces), f"{summary.seconds:.1f} s", f"{summary.photos_per_minute:.1f}"]
    if c["not read"]:
        columns.insert(5, "not photos")
        row.insert(5, str(c["not read"]))
    table = Table(*columns, title="facefix restore", title_justify="left")
    table.add_row(*row)
    err.print(table)
    if c["not read"]:
        err.print(f"{c['not read']} file(s) in the folders are not photos facefix reads; --report lists each "
                  "with the reason", highlight=False)


def print_nothing_found(not_read: list[NotRead]) -> None:
    """No photo to restore: say so, and what the files that were found are."""
    err.print("no photos found in the given paths", highlight=False)
    for item in not_read[:5]:
        err.print(f"  {shown(item.path)}: {escape(item.why)}", highlight=False)
    if len(not_read) > 5:
        err.print(f"  ... and {len(not_read) - 5} more files that are not photos facefix reads", highlight=False)


def print_end(summary: RestoreSummary, rows, *, quiet: bool, json_out: bool) -> None:
    """After a run: the per-face table and what was written (few photos), the summary, the failures."""
    total = summary.total
    if not json_out and not quiet and rows:
        print_table(rows)
    if not quiet:
        if total <= 20:
            print_written(rows)
        print_summary(summary)
        if summary.all_skipped:
            err.print(f"all {total} photo(s) were done by an earlier run with the same settings; nothing "
                      "was written (--force redoes them)", highlight=False)
    if summary.counts["failed"]:
        err.print(f"[red]{summary.counts['failed']} of {total} photos failed[/red]")
        if debug_enabled():
            err.print("\n".join(shown(f) for f in summary.failures), highlight=False)


def run_and_print(session: RestoreSession, *, quiet: bool, json_out: bool, executor: Executor | None = None) -> None:
    """Run the session with a progress bar, printing each photo's lines as it finishes, then the end."""
    total = len(session.jobs)
    rows: list = []
    on_workers = " · on workers {task.fields[busy]}" if executor is not None else ""  # a cluster run
    progress = make_progress("photos · faces {task.fields[faces]} · failed {task.fields[failed]}" + on_workers,
                             disable=quiet or total < 2)
    task = progress.add_task("restoring", total=total, faces=0, failed=0, busy=0)

    def on_outcome(outcome: Outcome) -> None:
        if json_out:
            for record in json_records(outcome):
                # markup=False: a name like "[red]x.jpg" is data, printed as it is
                out.print(json.dumps(json_safe(record), ensure_ascii=False), markup=False, highlight=False,
                          soft_wrap=True)
        if outcome.status == "not read":
            return
        if outcome.status == "failed":
            progress.console.print(f"[red]error:[/red] {shown(outcome.error or '')}", highlight=False)
        elif outcome.result is not None and not json_out and total <= TABLE_LIMIT:
            rows.append(outcome.result)
        so_far = session.summary  # already counts this photo
        progress.update(task, advance=1, faces=so_far.faces, failed=so_far.counts["failed"], busy=so_far.in_flight)

    try:
        with progress:
            summary = session.run(on_outcome, executor=executor)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/yellow] after {session.summary.photos_done} of {total} photos; finished "
                  "photos are kept and recorded — rerun the same command to do the rest", highlight=False)
        raise typer.Exit(130) from None
    print_end(summary, rows, quiet=quiet, json_out=json_out)
    if summary.counts["failed"]:
        raise typer.Exit(1)
