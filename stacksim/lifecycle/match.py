"""Which lifecycle a hosted model follows: its lab, its row of the deprecation table (exact id,
then a normalised id), and its release date where there is no row.

Hosts map to labs as issue #6 asks: ``azure-openai`` follows OpenAI's lifecycle; Bedrock and
Vertex follow the lab whose model they serve (Claude -> Anthropic, Gemini -> Google), although
REFERENCE.md section 3 notes that "Bedrock and Vertex set their own dates"; open-weight models on
hosts (Groq, Together, Fireworks, Cerebras, Bedrock) and labs without history in the table
(Mistral) have no lifecycle data, and none is invented for them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from stacksim.lifecycle.data import Row

# Catalog provider id -> lab whose lifecycle it follows (stacksim/catalog/data/providers.csv).
_PROVIDER_LAB = {"openai": "OpenAI", "azure-openai": "OpenAI", "anthropic": "Anthropic", "google": "Google"}
# Open-weight families (their weights are published, so no lab retires them; a host may stop
# serving them, which the table does not record).
_OPEN_WEIGHT = re.compile(
    r"llama|gpt-oss|mistral|mixtral|codestral|ministral|magistral|devstral|pixtral|qwen|deepseek|"
    r"gemma|phi-|kimi|glm|granite|nemotron|olmo|falcon",
)
_HOST_PREFIX = re.compile(
    r"^(?:(?:us|eu|apac|jp|au|global)\.)?(?:anthropic|meta|openai|mistral|amazon|cohere|google)\."
)
_DATE8 = re.compile(r"[-@](20\d{2})(\d{2})(\d{2})$")
_DATE_ISO = re.compile(r"-(20\d{2})-(\d{2})-(\d{2})$")
_DATE_MMDD = re.compile(r"-(\d{2})(\d{2})$")
_DATE_MM_DD = re.compile(r"-(\d{2})-(\d{2})$")

NO_DATA = "no lifecycle data; host deprecations not modelled"


def strip_host(model_id: str) -> str:
    """``anthropic.claude-sonnet-4-5-20250929-v1:0`` -> ``claude-sonnet-4-5-20250929``;
    ``openai/gpt-4o`` -> ``gpt-4o``; ``models/gemini-2.5-flash`` -> ``gemini-2.5-flash``."""
    s = model_id.strip().lower().rsplit("/", 1)[-1]
    s = _HOST_PREFIX.sub("", s)
    return re.sub(r"-v\d+(?::\d+)?$", "", s)


def snapshot_date(model_id: str) -> date | None:
    """The snapshot date written in an id with its year (``-20250929``, ``-2024-05-13``,
    ``@20250929``): the release-date convention of the table (``release_date_basis``)."""
    s = strip_host(model_id)
    for pat in (_DATE8, _DATE_ISO):
        m = pat.search(s)
        if m:
            try:
                return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            except ValueError:
                return None
    return None


def normalise(model_id: str) -> tuple[str, str | None]:
    """(base, date) of an id: host prefix and version suffix gone, a trailing snapshot date split
    off (``YYYYMMDD``; ``MMDD`` where only month and day are written), dots between digits as
    dashes (``claude-sonnet-4.5`` == ``claude-sonnet-4-5``)."""
    s = strip_host(model_id).replace("@", "-")
    when: str | None = None
    for pat, year in ((_DATE8, True), (_DATE_ISO, True), (_DATE_MMDD, False), (_DATE_MM_DD, False)):
        m = pat.search(s)
        if not m:
            continue
        parts = m.groups()
        mm, dd = (parts[1], parts[2]) if year else (parts[0], parts[1])
        if 1 <= int(mm) <= 12 and 1 <= int(dd) <= 31:
            when = ("".join(parts)) if year else mm + dd
            s = s[: m.start()]
            break
    s = re.sub(r"(?<=\d)\.(?=\d)", "-", s).removesuffix("-latest")
    return s, when


def _same_day(a: str, b: str) -> bool:
    return a == b or a[-4:] == b[-4:] and (len(a) == 4 or len(b) == 4)


@dataclass
class Match:
    """What a hosted model's lifecycle is built from."""

    lab: str | None  # None: no lifecycle data (open weights on a host, or a lab not in the table)
    row: Row | None = None
    how: str = "none"  # exact | normalised | none
    release: date | None = None
    release_basis: str = ""
    related: list[Row] = field(default_factory=list)  # dated snapshots of an undated alias
    notes: list[str] = field(default_factory=list)


def lab_of(provider: str, model: str) -> tuple[str | None, str]:
    """(lab, why). ``None`` where no lab's lifecycle applies."""
    p, m = provider.lower(), strip_host(model)
    if _OPEN_WEIGHT.search(m):
        return None, f"{NO_DATA} (open-weight model on {provider})"
    if p in _PROVIDER_LAB:
        lab = _PROVIDER_LAB[p]
        why = "" if p == lab.lower() else (f"{provider} serves {lab}'s model: {lab}'s lifecycle "
                                           "(the host sets its own dates, not in the table)")
        return lab, why
    # Bedrock, Vertex and any other host: the model id says whose model it is.
    if "claude" in m:
        return "Anthropic", (f"{provider} serves Anthropic's model: Anthropic's lifecycle (Bedrock "
                             "and Vertex set their own dates, REFERENCE.md section 3)")
    if m.startswith("gemini") or "bison" in m or "gecko" in m:
        return "Google", f"{provider} serves Google's model: Google's lifecycle"
    return None, f"{NO_DATA} ({provider} is not a lab with deprecation history in the table)"


def _lookup(wanted: str, rows: list[Row], related: list[Row]) -> tuple[Row | None, str]:
    """(row, how) for one id: exact, then normalised (undated table rows cover dated ids; dated
    rows of an undated id are only related, added to ``related``: an alias moves on)."""
    for r in rows:
        if wanted in r.ids:
            return r, "exact"
    base, when = normalise(wanted)
    for r in rows:
        for rid in r.ids:
            rbase, rwhen = normalise(rid)
            if rbase != base:
                continue
            if rwhen is None or (when is not None and _same_day(when, rwhen)):
                return r, "normalised"
            if when is None and r not in related:
                related.append(r)
    return None, "none"


def find(provider: str, model: str, catalog_model: str | None, rows: tuple[Row, ...]) -> Match:
    """Match a hosted model to its lifecycle row (see the module docstring)."""
    lab, why = lab_of(provider, model)
    out = Match(lab=lab, notes=[why] if why else [])
    if lab is None:
        return out
    mine = [r for r in rows if r.lab == lab]
    # Vertex rows first for Vertex, the lab's own API rows first otherwise.
    vertex = provider.lower().startswith("vertex")
    mine.sort(key=lambda r: (r.channel == "Vertex") != vertex)
    # The provider's own id first (exact, then normalised), then the catalog's family id.
    wanted = [strip_host(model)] + ([catalog_model.lower()] if catalog_model else [])
    for w in wanted:
        out.row, out.how = _lookup(w, mine, out.related)
        if out.row is not None:
            if out.how == "normalised":
                out.notes.append(f"matched table row '{out.row.model}' by normalised id")
            break
    if out.row is not None and out.row.release is not None:
        out.release, out.release_basis = out.row.release, out.row.release_basis or "table"
        return out
    for w in wanted:
        d = snapshot_date(w)
        if d is not None:
            out.release, out.release_basis = d, "snapshot date in model id"
            return out
    dated = [r for r in out.related if r.release is not None]
    if dated:
        first = min(dated, key=lambda r: r.release or date.max)
        out.release = first.release
        out.release_basis = f"alias: release of its first dated snapshot {first.ids[0]}"
        last = max(dated, key=lambda r: r.shutdown or date.min)
        if last.shutdown is not None:
            out.notes.append(
                f"alias of dated snapshots; {last.ids[0]} shuts down {last.shutdown} "
                "(the alias retires then only if it still points to that snapshot)"
            )
    return out
