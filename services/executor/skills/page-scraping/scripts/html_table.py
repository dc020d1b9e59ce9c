"""Extract the rows of HTML tables to CSV with the standard library's html.parser.

Usage: python3 html_table.py PAGE.html [--table N] [--base-url URL] > rows.csv
Every <tr> of every <table> becomes a CSV row (or only of the N-th table, counting from 1); cell
text is whitespace-collapsed and entities decoded; links inside a cell are appended as
" <url>", made absolute with --base-url. Nested tables count as separate tables.
"""

from __future__ import annotations

import argparse
import csv
import sys
from html.parser import HTMLParser
from urllib.parse import urljoin


class Tables(HTMLParser):
    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.tables: list[list[list[str]]] = []
        self.open_tables: list[int] = []  # indexes into self.tables, innermost last
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
            self.open_tables.append(len(self.tables) - 1)
        elif tag == "tr" and self.open_tables:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell, self.links = [], []
        elif tag == "a" and self.cell is not None:
            href = dict(attrs).get("href")
            if href:
                self.links.append(urljoin(self.base_url, href))

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None and self.row is not None:
            text = " ".join("".join(self.cell).split())
            self.row.append(" ".join([text, *(f"<{u}>" for u in self.links)]).strip())
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if self.row and self.open_tables:
                self.tables[self.open_tables[-1]].append(self.row)
            self.row = None
        elif tag == "table" and self.open_tables:
            self.open_tables.pop()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="HTML tables to CSV")
    parser.add_argument("page")
    parser.add_argument("--table", type=int, default=0, help="only the N-th table (1-based)")
    parser.add_argument("--base-url", default="", help="make relative links absolute")
    args = parser.parse_args(argv)
    with open(args.page, encoding="utf-8", errors="replace") as f:
        tables = Tables(args.base_url)
        tables.feed(f.read())
        tables.close()
    chosen = tables.tables if not args.table else tables.tables[args.table - 1 : args.table]
    out = csv.writer(sys.stdout)
    for rows in chosen:
        out.writerows(rows)
    print(f"{len(tables.tables)} table(s), {sum(len(t) for t in chosen)} row(s) written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
