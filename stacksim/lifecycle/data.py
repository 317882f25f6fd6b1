"""The deprecation history, read from ``shared/facts/model_deprecations.csv`` (never copied).

One :class:`Row` per CSV row (97: OpenAI 51, Anthropic 19, Google 27; shared/facts/REFERENCE.md
section 3), with its dates parsed, its model ids split out of the ``model`` text, and the
schedule slips its ``notes`` record (a date that was announced and later moved).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path

from stacksim.calibration.data import shared_dir

LABS = ("OpenAI", "Anthropic", "Google")

# The date the shared facts were gathered up to: the latest source read in the table's notes is
# 2026-11-10 (dev.to aideprecations), api_prices.csv was downloaded 2026-11-27, and issue #6
# fixes 2026-11-28. Shutdowns after it had not happened yet: their lifetimes are right-censored.
DATA_AS_OF = date(2026, 11, 28)

_ISO = re.compile(r"\d{4}-\d{2}-\d{2}")
_ID = re.compile(r"[a-z0-9][a-z0-9._@:/\-]*", re.IGNORECASE)
# Notes that say a published schedule moved (REFERENCE.md section 3, "Dates move"). Page versions
# that disagree ("page versions disagree", "inconsistent") are not slips: the column date stands.
_SLIP = re.compile(
    r"originally scheduled|original discontinuation|scheduled \d{4}-\d{2}-\d{2}, extended|"
    r"slipped|schedule moved|Vertex listed",
    re.IGNORECASE,
)
# Dates in notes that are not schedules: when a page was read or updated.
_NOT_A_SCHEDULE = re.compile(r"(read|updated)\s+(\d{4}-\d{2}-\d{2})", re.IGNORECASE)


@dataclass(frozen=True)
class Row:
    """One model's lifecycle as the deprecation table gives it."""

    lab: str  # OpenAI | Anthropic | Google
    channel: str  # "" (the lab's own API) or "Vertex"
    model: str  # the ``model`` text as written
    ids: tuple[str, ...]  # model ids the text names
    release: date | None
    release_basis: str
    announced: date | None
    announced_at_release: bool  # Google stable models are released with their retirement date
    shutdown: date | None  # the date it actually shut down (or will), after any slip
    scheduled: date | None  # the first published shutdown date (== shutdown unless it slipped)
    replacement: str
    status_flag: str
    notes: str
    source: str

    @property
    def slip_days(self) -> int:
        if self.shutdown is None or self.scheduled is None:
            return 0
        return (self.shutdown - self.scheduled).days

    @property
    def lifetime_days(self) -> int | None:
        if self.release is None or self.shutdown is None:
            return None
        return (self.shutdown - self.release).days

    @property
    def notice_days(self) -> int | None:
        if self.announced is None or self.shutdown is None:
            return None
        return (self.shutdown - self.announced).days


def csv_path(root: Path | None = None) -> Path:
    """Where the table lives: ``<shared>/facts/model_deprecations.csv``."""
    return (root or shared_dir()) / "facts" / "model_deprecations.csv"


def _date(text: str) -> date | None:
    m = _ISO.search(text or "")
    return date.fromisoformat(m.group(0)) if m else None


def _ids(model: str) -> tuple[str, ...]:
    """``"gpt-4o"`` -> (gpt-4o,); ``"text-similarity-davinci-001 (and 15 other ...)"`` -> its
    first id; ``"PaLM API on Google AI (text-bison-001, chat-bison-001 etc.)"`` -> the ids in
    the brackets (the text before them is a description, not an id)."""
    head, _, rest = model.partition("(")
    head = head.strip()
    if head and " " not in head:
        return (head.lower(),)
    inside = rest.rsplit(")", 1)[0]
    out = []
    for part in inside.split(","):
        tok = part.strip().removesuffix("etc.").strip()
        m = _ID.fullmatch(tok)
        if m and any(ch.isdigit() for ch in tok):
            out.append(tok.lower())
    return tuple(out)


def _lab(provider: str) -> tuple[str, str]:
    """``"Google (Vertex)"`` -> ("Google", "Vertex")."""
    name, _, rest = provider.partition("(")
    return name.strip(), rest.rstrip(")").strip()


def _shutdown(col: str, notes: str, flag: str) -> tuple[date | None, date | None]:
    """(actual, first scheduled) shutdown. A slip note names the first date and the moved one;
    dates moved only ever later in this table, so the latest named date is the actual one."""
    first = _date(col)
    if first is None:
        return None, None
    if not (_SLIP.search(notes) or flag == "scheduled-then-moved"):
        return first, first
    skip = {m.group(2) for m in _NOT_A_SCHEDULE.finditer(notes)}
    named = [date.fromisoformat(d) for d in _ISO.findall(notes) if d not in skip]
    dates = [first, *named]
    return max(dates), min(dates)


def parse_row(r: dict[str, str]) -> Row:
    lab, channel = _lab(r["provider"])
    notes = r.get("notes", "")
    flag = r.get("status_flag", "")
    shutdown, scheduled = _shutdown(r.get("shutdown_date", ""), notes, flag)
    announced_text = r.get("deprecation_announced", "")
    return Row(
        lab=lab,
        channel=channel,
        model=r["model"],
        ids=_ids(r["model"]),
        release=_date(r.get("release_date", "")),
        release_basis=r.get("release_date_basis", ""),
        announced=_date(announced_text),
        announced_at_release="published at release" in announced_text,
        shutdown=shutdown,
        scheduled=scheduled,
        replacement=r.get("recommended_replacement", ""),
        status_flag=flag,
        notes=notes,
        source=r.get("source", ""),
    )


@lru_cache(maxsize=4)
def load_rows(path: Path | None = None) -> tuple[Row, ...]:
    """Every row of the deprecation table. A missing file is an error naming where it looked."""
    p = path or csv_path()
    if not p.exists():
        raise FileNotFoundError(
            f"the model deprecation history is not at {p}; set STACKSIM_SHARED to the folder that "
            "holds facts/model_deprecations.csv"
        )
    with open(p, newline="", encoding="utf-8") as fh:
        rows = [
            {k.strip(): (v or "").strip() for k, v in row.items() if k}
            for row in csv.DictReader(fh)
        ]
    return tuple(parse_row(r) for r in rows if r.get("provider") and r.get("model"))

