"""Human-readable output of reports for the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from reelscope.report import Report, SimilarVideo


def _t(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def summary(console: Console, report: Report, cached: bool = False) -> None:
    v = report.video
    head = (
        f"[bold]{v.filename or v.id}[/]  id [cyan]{v.id}[/]  {v.duration_s:.1f} s  "
        f"{v.width}x{v.height} @ {v.fps:.0f} fps  audio: {'yes' if v.has_audio else 'no'}"
    )
    console.print(head)
    if cached:
        console.print("[dim]already analyzed: the stored report (use --force to analyze again)[/]")
    if report.labels:
        console.print("\n[bold]Labels[/]")
        for lb in report.labels[:6]:
            console.print(f"  {lb.label:<24} {lb.score:.2f}  {_t(lb.start_s)}-{_t(lb.end_s)}")
    console.print("\n[bold]On-screen text[/]")
    if not report.ocr:
        console.print("  (none)")
    for e in report.ocr:
        console.print(f"  {_t(e.start_s)}-{_t(e.end_s)}  {e.text}")
    tr = report.transcript
    console.print(f"\n[bold]Speech[/] ({tr.language or 'none'})")
    if not tr.segments:
        console.print("  (no speech)")
    for s in tr.segments:
        console.print(f"  {_t(s.start_s)}-{_t(s.end_s)}  {s.text}")
    console.print(f"\n[bold]Sentiment[/] {report.sentiment.label} ({report.sentiment.score:+.2f})")
    console.print("\n[bold]Copyright matches[/]")
    if not report.copyright:
        console.print("  (none)")
    for m in report.copyright:
        console.print(
            f"  #{m.reference_id} {m.title}: {m.kind} match, score {m.score:.2f}, "
            f"query {_t(m.query_start_s)} = reference {_t(m.reference_start_s)} "
            f"for {m.duration_s:.1f} s"
            + (f" at {m.speed:.2f}x speed" if abs(m.speed - 1.0) >= 0.05 else "")
        )
    similar_table(console, report.similar)
    if report.timings_s:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in report.timings_s.items() if k != "total")
        console.print(f"\n[dim]took {report.timings_s.get('total', 0):.2f} s ({parts})[/]")


def similar_table(console: Console, similar: tuple[SimilarVideo, ...]) -> None:
    console.print("\n[bold]Similar videos[/]")
    if not similar:
        console.print("  (none stored yet)")
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("video id")
    table.add_column("score", justify="right")
    for s in similar:
        table.add_row(s.video_id, f"{s.score:.3f}")
    console.print(table)
