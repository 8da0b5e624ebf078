"""The README and docs/ are checked: links resolve, named commands exist, the quick start runs.

Each check names the drift it catches: a page moved or renamed without its links, a Makefile
target renamed under the docs, a `python -m` module that no longer starts, and a quick-start
client snippet that no longer matches `client.api`.
"""

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
MAKE = re.compile(r"(?:^|[\s;(])make ([A-Za-z][\w-]*)")
PYTHON_M = re.compile(r"python -m ([A-Za-z_][\w.]*)")
TARGET = re.compile(r"^([A-Za-z][\w-]*(?:[ \t]+[A-Za-z][\w-]*)*)[ \t]*:(?!=)", re.M)


def code_text(text: str) -> str:
    """The fenced blocks and inline code spans of a page: where commands are named."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    return "\n".join(blocks + INLINE.findall(prose))


def relative_links(page: Path) -> list[str]:
    links = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        links.append(target.split("#", 1)[0])
    return links


def makefile_targets(makefile: Path) -> set[str]:
    targets = set()
    for names in TARGET.findall(makefile.read_text()):
        targets.update(names.split())
    return targets


def named(pattern: re.Pattern) -> list[str]:
    found = set()
    for page in PAGES:
        found.update(pattern.findall(code_text(page.read_text())))
    return sorted(found)


def quick_start_snippet(readme: str) -> str:
    """The first ```python block under the README's "## Quick start" heading."""
    section = readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert match, "the quick start has no ```python block"
    return match.group(1)


def test_pages_exist():
    for name in ("training", "export", "serving", "client", "security", "rollouts", "benchmarks"):
        assert (ROOT / "docs" / f"{name}.md").is_file(), f"docs/{name}.md is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    broken = [t for t in relative_links(page) if t and not (page.parent / t).exists()]
    assert not broken, f"{page.name} links to missing files: {broken}"


def test_link_parser_sees_links():
    """Guards the check above: a parser that finds no links would pass every page."""
    assert "docs/benchmarks.md" in relative_links(ROOT / "README.md")


def test_named_make_targets_exist():
    targets = makefile_targets(ROOT / "Makefile")
    assert {"serve", "test", "lint"} <= targets, targets
    missing = [t for t in named(MAKE) if t not in targets]
    assert not missing, f"the docs name make targets the Makefile lacks: {missing}"


@pytest.mark.integration
@pytest.mark.parametrize("module", named(PYTHON_M))
def test_named_python_m_modules_start(module):
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"python -m {module} --help: exit {done.returncode}: {done.stderr}"


@pytest.mark.integration
def test_quick_start_client_snippet_runs(tiny_exports, tmp_path):
    from tests.support import ServerProcess

    snippet = quick_start_snippet((ROOT / "README.md").read_text())
    claim = re.search(r"print\(.*\)\s*#\s*(.+)$", snippet, re.M)
    assert claim, "the snippet's print() has no comment saying what it prints"
    assert "127.0.0.1:8500" in snippet
    tiny_exports.put("unet", tmp_path / "models")
    server = ServerProcess(
        "--model_name=unet",
        f"--model_base_path={tmp_path / 'models' / 'unet'}",
        log_path=tmp_path / "log",
        rest=False,
    )
    with server:
        code = snippet.replace("127.0.0.1:8500", f"127.0.0.1:{server.port}")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md quick start", "exec"), {})
    assert out.getvalue().strip() == claim.group(1).strip()
