"""`wacamp contacts ...`: import people's CSV files into lists, look contacts up, opt them out or in."""

from __future__ import annotations

import csv
import itertools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from campaigns.contacts.csvfiles import CsvOutput, CsvRow, CsvSource, neutralize_formula
from campaigns.contacts.importer import (
    ContactView,
    ImportOptions,
    ImportSummary,
    find_contact,
    import_contacts,
    list_summaries,
    opt_in,
    opt_out,
)
from campaigns.contacts.phones import InvalidPhoneNumber, check_region, normalize
from campaigns.contacts.rows import PHONE_HEADERS, Reject, plan_columns
from campaigns.core.exceptions import UserError
from campaigns.segments.audience import count_segment, list_id_of, segment_members
from wacamp.cli.common import AppContext, err_console, json_option, out_console, pass_app, print_json

REJECTS_HEADER = ["line", "raw value", "reason"]


@click.group("contacts")
def contacts_group() -> None:
    """Import contact lists, look contacts up, record opt-outs (opt-out always wins)."""


def _region_option(func: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--region",
        help="ISO country code for numbers written without +country (default: [contacts] default_region).",
    )(func)


def _region(app: AppContext, region: str | None) -> str | None:
    return check_region(region if region is not None else app.settings.contacts.default_region)


@contacts_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--list", "list_name", required=True, help="Contact list to add the contacts to (created if new)."
)
@_region_option
@click.option(
    "--phone-column",
    help=f"Column holding the numbers (default: the first column named {', '.join(PHONE_HEADERS)}).",
)
@click.option(
    "--consent-column", help="Column saying yes/no to marketing (default: a column named consent…)."
)
@click.option("--opted-in", is_flag=True, help="The file has no consent column: every row in it is opted in.")
@click.option(
    "--rejects",
    metavar="PATH",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write rejected rows here (default: FILE's name + .rejects.csv, only when some row is rejected).",
)
@click.option(
    "--dry-run", is_flag=True, help="Read and check everything, count, write nothing to the database."
)
@json_option
@pass_app
def import_cmd(
    app: AppContext,
    file: Path,
    list_name: str,
    region: str | None,
    phone_column: str | None,
    consent_column: str | None,
    opted_in: bool,
    rejects: Path | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Import a CSV file of contacts into a list (all of it, or nothing on error).

    The file may be UTF-8 with or without BOM, separated by commas, semicolons or tabs. Numbers are
    stored in E.164; every column other than phone and consent becomes an attribute usable in
    templates ({first_name}). Consent values: yes/y/true/1/x/si/sì/sí/oui/ja or no/n/false/0/empty;
    anything else rejects the row. Importing again updates attributes and adds missing members.
    Opt-outs stay opted out.

    \b
    Counts: imported = new contacts, updated = contacts that existed,
    rejected = rows not stored (see the rejects file; a second row with the same number, however
    written, is rejected as a duplicate), not consented = stored rows whose consent says no.

    \b
    Examples:
      wacamp contacts import people.csv --list spring --region IT
      wacamp contacts import crm.csv --list vip --phone-column Cellulare --consent-column Privacy
      wacamp contacts import optins.csv --list newsletter --opted-in --dry-run
    """
    if consent_column and opted_in:
        raise click.UsageError("give either --consent-column or --opted-in, not both")
    if not list_name.strip():
        raise click.UsageError("--list needs a name")
    if rejects is not None and rejects.resolve() == file.resolve():
        raise click.UsageError("--rejects must not be the file being imported")
    options = ImportOptions(
        list_name=list_name,
        region=_region(app, region),
        phone_column=phone_column,
        consent_column=consent_column,
        opted_in=opted_in,
        dry_run=dry_run,
    )
    summary, written = _run_import(app, file, options=options, rejects=rejects)
    if as_json:
        print_json({**summary.to_dict(), "rejects_file": written})
        return
    _print_summary(summary, rejects_file=written)


def _run_import(
    app: AppContext, file: Path, *, options: ImportOptions, rejects: Path | None
) -> tuple[ImportSummary, str | None]:
    """Import the file; the summary and the rejects file written (None when none was)."""
    explicit = rejects is not None
    target = rejects or file.with_name(file.stem + ".rejects.csv")
    enabled = explicit or not options.dry_run
    with CsvSource(file) as source:
        plan_columns(
            source.header,
            phone_column=options.phone_column,
            consent_column=options.consent_column,
            opted_in=options.opted_in,
        )
        engine = app.engine
        with (
            _rejects_file(target, eager=explicit, enabled=enabled) as on_reject,
            _progress(source.size_bytes) as on_progress,
        ):
            summary = import_contacts(
                engine, source, options=options, on_reject=on_reject, on_progress=on_progress
            )
    written = enabled and (explicit or summary.rejected > 0)
    return summary, str(target) if written else None


@contextmanager
def _rejects_file(path: Path, *, eager: bool, enabled: bool) -> Iterator[Callable[[Reject], None]]:
    """A callback writing rejects to `path`; the file appears only if the import succeeds.

    Eager: written even with no rejects (a header-only file says "none"). Otherwise opened at the
    first reject. Disabled (a dry run without --rejects): rejects are only counted.
    """
    output: list[CsvOutput] = [CsvOutput(path, REJECTS_HEADER)] if eager and enabled else []

    def on_reject(reject: Reject) -> None:
        if not enabled:
            return
        if not output:
            output.append(CsvOutput(path, REJECTS_HEADER))
        output[0].write([reject.line, reject.raw, reject.reason])

    try:
        yield on_reject
    except BaseException:
        for out in output:
            out.discard()
        raise
    for out in output:
        out.commit()


@contextmanager
def _progress(total_bytes: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar over the file's bytes on stderr, only when stderr is a terminal."""
    if not err_console.is_terminal:
        yield None
        return
    columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("import", total=total_bytes)
        yield lambda done: progress.update(task, completed=done)


def _print_summary(summary: ImportSummary, *, rejects_file: str | None) -> None:
    title = f"{summary.file} -> list {summary.list_name!r}"
    if summary.dry_run:
        title += " (dry run: nothing was written to the database)"
    reasons = ", ".join(f"{kind} {n}" for kind, n in sorted(summary.rejected_by_kind.items()))
    rejected_note = "rows not stored" + (f": {reasons}" if reasons else "")
    if rejects_file and summary.rejected:
        rejected_note += f" (see {rejects_file})"
    table = Table("count", "", "meaning", title=title, title_justify="left")
    table.add_row("rows", str(summary.rows), "data rows read (header and blank lines not counted)")
    table.add_row("imported", str(summary.imported), "new contacts")
    table.add_row("updated", str(summary.updated), "contacts that already existed (attributes, list updated)")
    table.add_row("rejected", str(summary.rejected), rejected_note)
    table.add_row(
        "not consented", str(summary.not_consented), "of imported + updated: stored, never sent marketing"
    )
    table.add_row("suppressed", str(summary.suppressed), "of updated: opted out earlier, stay opted out")
    out_console.print(table)


@contacts_group.command("lists")
@json_option
@pass_app
def lists_cmd(app: AppContext, as_json: bool) -> None:
    """Show every contact list: members, consented, suppressed (opted out), sendable.

    Sendable = consented and not opted out: who a marketing campaign on the list can reach.
    """
    summaries = list_summaries(app.engine)
    if as_json:
        print_json([s.to_dict() for s in summaries])
        return
    table = Table("list", "members", "consented", "suppressed", "sendable", "created")
    for s in summaries:
        created = s.created_at.strftime("%Y-%m-%d %H:%M")
        table.add_row(s.name, str(s.members), str(s.consented), str(s.suppressed), str(s.sendable), created)
    out_console.print(
        table if summaries else "no contact lists yet: `wacamp contacts import FILE --list NAME`"
    )


@contacts_group.command("show")
@click.argument("phone")
@_region_option
@json_option
@pass_app
def show_cmd(app: AppContext, phone: str, region: str | None, as_json: bool) -> None:
    """Show one contact, however the number is written.

    \b
    Examples:
      wacamp contacts show +393331234567
      wacamp contacts show "333 123 4567" --region IT
    """
    contact = find_contact(app.engine, normalize(phone, _region(app, region)))
    if as_json:
        print_json(contact.to_dict())
        return
    _print_contact(contact)


def _print_contact(contact: ContactView) -> None:
    table = Table("field", "value", title=contact.phone, title_justify="left", show_header=False)
    opted_out = f"opted out {contact.suppressed_at:%Y-%m-%d %H:%M} UTC" if contact.suppressed_at else "no"
    if contact.suppression_reason:
        opted_out += f" ({contact.suppression_reason})"
    consent = "yes" if contact.consent else "no"
    if contact.consent and contact.consent_at:
        consent += f" since {contact.consent_at:%Y-%m-%d %H:%M} UTC"
    table.add_row("consent", consent)
    table.add_row("opted out", opted_out)
    table.add_row("lists", ", ".join(contact.lists) or "(none)")
    for name, value in contact.attributes.items():
        table.add_row(f"  {name}", str(value))
    if contact.service_window_until:
        table.add_row("service window until", f"{contact.service_window_until:%Y-%m-%d %H:%M} UTC")
    if contact.marketing_deferred_until:
        table.add_row("marketing deferred until", f"{contact.marketing_deferred_until:%Y-%m-%d %H:%M} UTC")
    table.add_row("created", f"{contact.created_at:%Y-%m-%d %H:%M} UTC")
    table.add_row("updated", f"{contact.updated_at:%Y-%m-%d %H:%M} UTC")
    out_console.print(table)


@contacts_group.command("optout")
@click.argument("phones", nargs=-1)
@click.option(
    "--file", "file", type=click.Path(dir_okay=False, path_type=Path), help="CSV of numbers to opt out."
)
@click.option("--reason", help="Why (kept with the contact), e.g. 'asked by phone'.")
@_region_option
@json_option
@pass_app
def optout_cmd(
    app: AppContext,
    phones: tuple[str, ...],
    file: Path | None,
    reason: str | None,
    region: str | None,
    as_json: bool,
) -> None:
    """Opt numbers out of marketing. Opt-out always wins: no import or campaign undoes it.

    Numbers that are not contacts yet are recorded as opted out, so a later import cannot add them
    as sendable. --file takes a CSV with a phone column, or a plain list with one number per line.
    A number in the file that is not understood is listed, the others are opted out, and the
    command exits 1.

    \b
    Examples:
      wacamp contacts optout +393331234567 "+39 347 111 2223" --reason "asked by phone"
      wacamp contacts optout --file unsubscribed.csv --region IT
    """
    if not phones and file is None:
        raise click.UsageError("give PHONE numbers or --file")
    chosen = _region(app, region)
    numbers = [normalize(phone, chosen) for phone in phones]
    problems: list[str] = []
    if file is not None:
        numbers += _numbers_in_file(file, region=chosen, problems=problems)
    result = opt_out(app.engine, numbers, reason=reason)
    if as_json:
        print_json({**result.to_dict(), "not_understood": len(problems)})
    else:
        click.echo(
            f"opted out {result.opted_out} (of which {result.created} not contacts before), "
            f"already opted out {result.already}"
        )
    if problems:
        for problem in problems:
            err_console.print(problem, markup=False)
        raise UserError(
            f"{len(problems)} numbers in {file} were not understood (listed above); the others are opted out"
        )


def _numbers_in_file(path: Path, *, region: str | None, problems: list[str]) -> list[str]:
    """The numbers of a CSV with a phone column, or of a plain one-number-per-line list."""
    numbers: list[str] = []
    with CsvSource(path) as source:
        lowered = [name.lower() for name in source.header]
        column = next((index for index, name in enumerate(lowered) if name in PHONE_HEADERS), None)
        rows: Iterator[CsvRow] = source.rows()
        if column is None:  # no header: the first line is a number too
            rows, column = itertools.chain([source.header_row], rows), 0
        for row in rows:
            raw = row.fields[column] if column < len(row.fields) else ""
            try:
                numbers.append(normalize(raw, region))
            except InvalidPhoneNumber as exc:
                problems.append(f"{path} line {row.line}: {exc}")
    return numbers


@contacts_group.command("optin")
@click.argument("phones", nargs=-1, required=True)
@_region_option
@json_option
@pass_app
def optin_cmd(app: AppContext, phones: tuple[str, ...], region: str | None, as_json: bool) -> None:
    """Clear the opt-out of contacts who asked to receive marketing again, and record their consent.

    Use it only on the person's explicit request. Every number must already be a contact.

    \b
    Example:
      wacamp contacts optin +393331234567
    """
    chosen = _region(app, region)
    numbers = [normalize(phone, chosen) for phone in phones]
    cleared = opt_in(app.engine, numbers)
    if as_json:
        print_json({"opted_in": len(set(numbers)), "were_opted_out": cleared})
        return
    click.echo(f"opted in {len(set(numbers))} (of which {cleared} were opted out)")


_WHERE_HELP = "Only the members this segment expression keeps (the language: `wacamp segments --help`)."


@contacts_group.command("count")
@click.option("--list", "list_name", required=True, help="The contact list.")
@click.option("--where", metavar="EXPR", help=_WHERE_HELP)
@json_option
@pass_app
def count_cmd(app: AppContext, list_name: str, where: str | None, as_json: bool) -> None:
    """Count the members of a list, and how many of them a segment keeps.

    \b
    Examples:
      wacamp contacts count --list customers --where 'citta = "Milano" and eta >= 30'
      wacamp contacts count --list customers --where "iscritto >= '2026-01-01' or tags contains 'vip'"
    """
    counts = count_segment(app.engine, list_id_of(app.engine, list_name), where)
    if as_json:
        print_json({"list": list_name, "where": where, "members": counts.members, "kept": counts.kept})
        return
    if where is None:
        click.echo(f"{counts.members} members in list {list_name!r}")
        return
    click.echo(
        f"{counts.kept} of {counts.members} members of list {list_name!r} match ({counts.dropped} do not)"
    )


@contacts_group.command("export")
@click.option("--list", "list_name", required=True, help="The contact list.")
@click.option("--where", metavar="EXPR", help=_WHERE_HELP)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the CSV here (replaced only when complete); default: standard output.",
)
@pass_app
def export_cmd(app: AppContext, list_name: str, where: str | None, output: Path | None) -> None:
    """Export the members of a list (those a segment keeps) as CSV: phone, consent, opted_out, attributes.

    One column per attribute any exported contact has, in the order first met; importable again
    with `wacamp contacts import`. Cells starting with = + - @ are prefixed with ' (spreadsheets).

    \b
    Examples:
      wacamp contacts export --list customers --where 'not (citta in ("Roma", "Napoli")) and email is empty'
      wacamp contacts export --list customers --where 'tags contains "vip"' -o vip.csv
    """
    header, rows = _export_rows(app, list_id_of(app.engine, list_name), where)
    if output is None:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([neutralize_formula(cell) for cell in row] for row in rows)
        return
    target = CsvOutput(output, header)
    try:
        for row in rows:
            target.write(row)
    except BaseException:
        target.discard()
        raise
    target.commit()
    err_console.print(f"{target.rows_written} contacts written to {output}")


def _export_rows(app: AppContext, list_id: int, where: str | None) -> tuple[list[str], Iterator[list[str]]]:
    """The export's header (every attribute met) and its rows, read in two streaming passes."""
    keys: dict[str, None] = {}
    for row in segment_members(app.engine, list_id, where):
        keys.update(dict.fromkeys(row.attributes or {}))
    rows = (
        [
            row.phone,
            "yes" if row.consent else "no",
            "yes" if row.suppressed_at else "no",
            *(str((row.attributes or {}).get(key, "")) for key in keys),
        ]
        for row in segment_members(app.engine, list_id, where)
    )
    return ["phone", "consent", "opted_out", *keys], rows


COMMANDS: list[click.Command] = [contacts_group]
