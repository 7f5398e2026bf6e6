"""Tables of samples as users write them: CSV, tab-separated and JSON lines, with or without a
header row.

A `.tsv` has no quoting (IANA's text/tab-separated-values): a double quote in a tweet is a
character, never the start of a field that swallows the lines after it. A CSV may quote, so a
row read across several lines is reported with its line numbers rather than vanishing. A first
row that looks like data (no cell is a known column name, and its label value comes back in
the rows below) is data: the columns are then numbered from 0. A JSON line that is not an
object costs its row, reported, not the whole table.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cnncli.errors import CnncliError
from cnncli.files.jsontext import loads
from cnncli.limits import MAX_LINE_BYTES

TAB_SUFFIXES = (".tsv", ".tab")
HEADER_ROWS_SAMPLED = 1000  # rows looked at to tell a header row from data and to guess the columns
csv.field_size_limit(MAX_LINE_BYTES)  # the default, 131,072 characters, is a long review's length

Column = str | int  # a name from the header row, or a number from 0


@dataclass
class Table:
    """A manifest read whole: its columns and rows, and what did not read as one row per line."""

    columns: list[Column]
    rows: list[tuple[int, dict]]  # (line number, {column: cell})
    headerless: bool = False
    spans: list[tuple[int, int]] = field(default_factory=list)  # (first, last) line of rows read across lines
    bad: list[str] = field(default_factory=list)  # "file:line: why" of each line that is no row


def is_json_lines(path: Path) -> bool:
    return path.suffix.lower() == ".jsonl"


def delimiter_of(path: Path, first_line: str) -> str:
    """A tab for .tsv files and for other tables (not .csv) whose first line holds a tab; else a comma."""
    suffix = path.suffix.lower()
    return "\t" if suffix in TAB_SUFFIXES or (suffix != ".csv" and "\t" in first_line) else ","


def csv_options(delimiter: str) -> dict:
    """Tab-separated text has no quoting: its quotes are characters."""
    return {"delimiter": delimiter, "quoting": csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL}


def json_row(path: Path, number: int, line: str) -> dict:
    """One line of a JSON-lines manifest: an object, or a one-line error naming the line."""
    row = loads(line, f"{path}:{number}")  # (NaN and Infinity are not JSON)
    if not isinstance(row, dict):
        raise CnncliError(f"{path}:{number}: expected a JSON object per line")
    return row


def read_table(path: Path, lines: Sequence[tuple[int, str]], header: bool | str, names: Iterable[str],
               label: Column = "label") -> Table:
    """The table in `lines` ((number, text) of each non-empty line). `header`: True, False or
    "auto" (a first row that looks like data is data); `names` are the column names a header row
    would hold (lower case), and `label` the recipe's label column, a name or a number."""
    if is_json_lines(path):
        return _json_table(path, lines)
    if not lines:
        return Table([], [])
    numbers = [number for number, _ in lines]
    reader = csv.reader((text for _, text in lines), **csv_options(delimiter_of(path, lines[0][1])))
    records, spans, start = [], [], 0
    try:
        for cells in reader:
            end = reader.line_num - 1  # index of the line the row ends on
            if end > start:
                spans.append((numbers[start], numbers[end]))
            records.append((numbers[end], cells))
            start = end + 1
    except csv.Error as error:
        raise CnncliError(f"{path}:{numbers[min(reader.line_num, len(numbers)) - 1]}: not a table row ({error})") \
            from None
    headerless = header is False or (header == "auto" and looks_like_data(records, set(names), label))
    if headerless:
        width = max(len(cells) for _, cells in records)
        columns: list[Column] = list(range(width))
    else:
        columns = list(records[0][1])
        records = records[1:]
    rows = [(number, dict(zip(columns, cells))) for number, cells in records]
    return Table(columns, rows, headerless, spans)


def _json_table(path: Path, lines: Sequence[tuple[int, str]]) -> Table:
    rows, bad = [], []
    for number, line in lines:
        try:
            rows.append((number, json_row(path, number, line)))
        except CnncliError as error:
            bad.append(str(error))
    columns = list(dict.fromkeys(key for _, row in rows for key in row))
    return Table(columns, rows, bad=bad)


def first_row_is_data(path: Path, lines: Sequence[tuple[int, str]], names: Iterable[str]) -> bool:
    """Whether a .csv/.tsv's first row reads as data rather than as a header row (looks_like_data)."""
    if is_json_lines(path) or not lines:
        return False
    head = [text for _, text in lines[:HEADER_ROWS_SAMPLED + 1]]
    try:
        records = list(enumerate(csv.reader(head, **csv_options(delimiter_of(path, head[0])))))
    except csv.Error:
        return False
    return looks_like_data(records, {name.lower() for name in names}, "label")


def looks_like_data(records: Sequence[tuple[int, list[str]]], names: set[str], label: Column) -> bool:
    """Whether the first row is data, not a header: none of its cells is a known column name,
    and its value in the label column (the recipe's number, else the column whose values repeat
    most) comes back in the rows below, as a label does and a column name does not."""
    if len(records) < 2:
        return False
    first, rest = records[0][1], [cells for _, cells in records[1:HEADER_ROWS_SAMPLED + 1]]
    if any(cell.strip().lower() in names for cell in first):
        return False
    index = label if isinstance(label, int) else label_column_of(rest)
    return index is not None and index < len(first) and any(
        len(cells) > index and cells[index] == first[index] for cells in rest)


def label_column_of(rows: Sequence[Sequence[str]]) -> int | None:
    """The number of the column with the fewest different values (the last, among equals): where
    a table without names keeps its labels."""
    width = max((len(cells) for cells in rows), default=0)
    if width == 0:
        return None
    kinds = [len({cells[index] for cells in rows if len(cells) > index}) for index in range(width)]
    return min(range(width), key=lambda index: (kinds[index], -index))


def text_column_of(rows: Sequence[dict], label: Column, columns: Sequence[Column]) -> Column | None:
    """The column other than `label` whose cells are longest on average: where sentences are."""
    others = [column for column in columns if column != label]
    sample = rows[:HEADER_ROWS_SAMPLED]
    return max(others, key=lambda column: sum(len(str(row.get(column) or "")) for row in sample), default=None)


def guess_columns(table: Table) -> dict[str, Column]:
    """For a table without a header row: data.label_column by its repeating values, and the
    sample column (data.text_column and data.path_column) by the length of its cells."""
    rows = [row for _, row in table.rows]
    label = label_column_of([[str(row.get(column, "")) for column in table.columns] for row in
                             rows[:HEADER_ROWS_SAMPLED]])
    label = table.columns[label] if label is not None else 0
    content = text_column_of(rows, label, table.columns)
    content = content if content is not None else label
    return {"label_column": label, "text_column": content, "path_column": content}


def tab_table_hint(lines: Sequence[tuple[int, str]]) -> str | None:
    """What to set for a file of lines most of which hold a tab (read as "LABEL text" lines, a
    table of text and label comes out as one class per sentence); None for other files."""
    sample = [text for _, text in lines[:HEADER_ROWS_SAMPLED]]
    if not sample or sum("\t" in text for text in sample) * 2 <= len(sample):
        return None
    rows = [text.split("\t") for text in sample]
    widths = Counter(len(cells) for cells in rows).most_common(1)[0][0]
    label = label_column_of([cells for cells in rows if len(cells) == widths])
    table_rows = [dict(enumerate(cells)) for cells in rows]
    text = text_column_of(table_rows, label, list(range(widths)))
    return (f"its lines hold tabs, as a table of {widths} columns does: set data.format: manifest, "
            f"data.header: false, data.text_column: {text}, data.label_column: {label}")
