"""Check that the command transcripts of the README and the manual (``PAGES``) still say what
the commands print.

    python docs/readme_check.py            # run every checkable `$ stacksim ...` line, report
    python docs/readme_check.py --show 3   # also print the full output of transcript 3

A transcript is a fenced block of the README whose lines start with ``$ stacksim``; the lines
after a command, up to the next ``$`` line, are what it printed. The README often shows an
excerpt, so the check is that those lines appear in the real output *in order* (other lines may
come between), after collapsing runs of spaces (table padding moves when a number gains a digit)
and blanking wall-clock times. A line ``...`` stands for any lines; ``...`` inside a line stands
for any text (a cell cut short).

A command is run (from the repository root, ``--out runs/X`` redirected to a scratch folder)
only when every ``.yaml`` file it names exists: examples of bad input (``bad.yaml``) and shell
redirections are illustrations, not transcripts. tests/test_readme.py runs this check.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = (README, ROOT / "docs" / "scenarios.md", ROOT / "docs" / "model.md")  # the pages with transcripts
# Values that differ from run to run of the same command: wall-clock seconds.
VOLATILE = (re.compile(r"wall [0-9.]+ s"), re.compile(r"\), [0-9.]+ s;"))


@dataclass
class Transcript:
    line: int  # the page's line of the command
    command: str
    expected: list[str]

    def runnable(self) -> bool:
        words = shlex.split(self.command, comments=True)
        if not words or words[0] != "stacksim" or any(w in (">", "|", "<", "&&") for w in words):
            return False
        return all((ROOT / w).is_file() for w in words if w.endswith(".yaml"))


def transcripts(text: str) -> list[Transcript]:
    out: list[Transcript] = []
    fence = False
    lang = ""
    cur: Transcript | None = None
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fence, lang, cur = (not fence), line[3:].strip(), None
            continue
        if not fence or lang:
            continue
        if line.startswith("$ "):
            cur = Transcript(n, line[2:].strip(), [])
            out.append(cur)
        elif cur is not None:
            cur.expected.append(line)
    return out


def normalise(line: str) -> str:
    for pat in VOLATILE:
        line = pat.sub(lambda m: re.sub(r"[0-9.]+", "_", m.group(0)), line)
    return " ".join(line.split())


def matches(expected: str, actual: str) -> bool:
    """Equal, where ``...`` inside the README line stands for any text (a cut table cell)."""
    if "..." not in expected:
        return expected == actual
    parts = [re.escape(x.strip()) for x in expected.split("...")]
    return re.fullmatch(r"\s*.*?\s*".join(parts), actual) is not None


def run(t: Transcript, scratch: Path) -> str:
    """What the command prints (stdout then stderr), with the scratch folder named back."""
    words = shlex.split(t.command, comments=True)
    exe = Path(sys.executable).with_name("stacksim")
    args = [str(exe)] + [str(scratch / w) if w.startswith("runs/") else w for w in words[1:]]
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    res = subprocess.run(args, check=False, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    return (res.stdout + res.stderr).replace(str(scratch) + "/", "")


def check(t: Transcript, output: str) -> str | None:
    """None when the README's lines appear in order in ``output``; else what went wrong."""
    actual = [normalise(a) for a in output.splitlines()]
    pos = 0
    for e in t.expected:
        ne = normalise(e)
        if not ne or ne.startswith("..."):
            continue
        hit = next((i for i in range(pos, len(actual)) if matches(ne, actual[i])), None)
        if hit is None:
            close = difflib.get_close_matches(ne, actual, n=1, cutoff=0.3)
            return f"README line not in the output (in order): {e.strip()}\n  closest output line: {close[0] if close else '-'}"
        pos = hit + 1
    return None


def main(argv: list[str]) -> int:
    show = {int(a) for a in argv[argv.index("--show") + 1:] if a.isdigit()} if "--show" in argv else set()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, (page, t) in enumerate((pg, t) for pg in PAGES for t in transcripts(pg.read_text())):
            if not t.runnable():
                print(f"[{k}] {page.name}:{t.line}: skipped (illustration): $ {t.command}")
                continue
            out = run(t, Path(tmp))
            problem = check(t, out)
            failures += problem is not None
            print(f"[{k}] {page.name}:{t.line}: {'OK' if problem is None else 'DIFFERS'}: $ {t.command}")
            if problem:
                print("  " + problem)
            if k in show:
                print(out)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
