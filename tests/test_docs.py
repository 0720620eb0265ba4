"""The documentation: every command-line option is documented in docs/cli.md, every relative link in README.md
and docs/*.md leads somewhere in the repository, and the README keeps CI's test command and stays a page a
creator reads in a minute.

Only ``v2v.cli.build_parser()`` is relied on (an argparse parser with one subcommand per command), not how it
builds its options."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CLI_DOC = DOCS / "cli.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 120
README_MAX_TABLE_ROWS = 10

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)  # fenced code blocks
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


# ---------------------------------------------------------------------------------------------- helpers
def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def documented_options(markdown: str) -> set[str]:
    """The option strings named in inline code spans (``-p, --prompt TEXT``), outside fenced examples: an option
    that only appears in an example command is not documented."""
    spans = [m.group(2) for m in CODE_SPAN.finditer(without_code_blocks(markdown))]
    return {o for span in spans for o in OPTION.findall(span)}


def parser_options() -> dict[str, set[str]]:
    """``{"restyle": {"--steps", "-p", ...}, ...}`` from the parser itself (``"v2v"``: the top-level ones)."""
    from v2v.cli import build_parser

    top = build_parser()
    subs = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subs) == 1, "build_parser() should have one set of subcommands"
    parsers = {"v2v": top, **subs[0].choices}
    return {name: {s for a in p._actions for s in a.option_strings if s not in ("-h", "--help")}
            for name, p in parsers.items()}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (code marks included), spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for h in HEADING.findall(without_code_blocks(page.read_text(encoding="utf-8"))):
        base, n = slug(h), 0
        while (a := base if n == 0 else f"{base}-{n}") in found:  # GitHub numbers repeated headings
            n += 1
        found.add(a)
    return found


def links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", without_code_blocks(page.read_text(encoding="utf-8")))
    return LINK.findall(text)


def tables(markdown: str) -> list[list[str]]:
    """The Markdown tables of a page (outside code blocks), each as its lines."""
    out, current = [], []
    for line in without_code_blocks(markdown).splitlines() + [""]:
        if line.lstrip().startswith("|"):
            current.append(line)
        elif current:
            out.append(current)
            current = []
    return out


# ---------------------------------------------------------------------------------------------- the helpers' own checks
def test_an_option_counts_only_as_itself_and_only_outside_examples():
    text = "- `--pose-json FILE`: keypoints. `-p, --prompt TEXT`.\n\n```bash\nv2v restyle --seed 3\n```\n"
    assert documented_options(text) == {"--pose-json", "-p", "--prompt"}  # not --pose, not --seed


def test_slugs_and_tables():
    assert slug("`v2v restyle`") == "v2v-restyle"
    assert slug("Long videos: windows, segments") == "long-videos-windows-segments"
    assert slug("`v2v.restyle`") == "v2vrestyle"
    assert [len(t) for t in tables("| a |\n|---|\n| 1 |\n\ntext\n```\n| not | a table |\n```\n")] == [3]


# ---------------------------------------------------------------------------------------------- the docs
def test_every_command_has_its_section_in_the_cli_reference():
    commands = set(parser_options()) - {"v2v"}
    assert {"restyle", "pose", "watch", "models"} <= commands
    headings = {slug(h) for h in HEADING.findall(without_code_blocks(CLI_DOC.read_text(encoding="utf-8")))}
    missing = sorted(c for c in commands if f"v2v-{c}" not in headings)
    assert not missing, f"docs/cli.md has no '## `v2v COMMAND`' section for: {', '.join(missing)}"


@pytest.mark.parametrize("command", ["v2v", "restyle", "pose", "watch", "batch", "models", "ui"])
def test_every_option_is_documented_in_the_cli_reference(command):
    documented = documented_options(CLI_DOC.read_text(encoding="utf-8"))
    missing = sorted(parser_options()[command] - documented)
    assert not missing, f"options of `{command}` missing from docs/cli.md (write each in `code`): {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings_of_the_repository(page):
    bad = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if ROOT not in dest.parents and dest != ROOT:
            bad.append(f"{target} (outside the repository)")
        elif not dest.exists():
            bad.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no such heading in {dest.name})")
    assert not bad, f"{page.relative_to(ROOT)}: broken links: {bad}"


def test_every_docs_page_is_in_the_index_and_the_index_in_the_readme():
    index = DOCS / "README.md"
    linked = {(DOCS / t.partition("#")[0]).resolve() for t in links(index) if t.partition("#")[0]}
    missing = sorted(p.name for p in DOCS.glob("*.md") if p != index and p.resolve() not in linked)
    assert not missing, f"docs/README.md does not link: {missing}"
    assert index.resolve() in {(ROOT / t.partition("#")[0]).resolve() for t in links(README)}


# ---------------------------------------------------------------------------------------------- the README
def test_readme_states_the_test_command_ci_runs():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if "pytest" in line and not line.lstrip().startswith("#")]
    assert ci, ".ci/run runs no pytest command"
    readme = {line.strip() for line in README.read_text(encoding="utf-8").splitlines()}
    for command in ci:
        assert command in readme, f"README.md must state CI's test command on a line of its own: {command}"


def test_readme_is_a_one_minute_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < README_MAX_LINES, "README.md grew: move the reference into docs/"
    big = [t[0] for t in tables(text) if len(t) - 2 > README_MAX_TABLE_ROWS]  # less the header and the |---|
    assert not big, f"README.md has a table of more than {README_MAX_TABLE_ROWS} rows: move it into docs/"
