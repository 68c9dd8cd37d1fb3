"""The man pages: each lints clean, and each CLI's page shows all its commands and options.

mandoc is required: these tests fail, never skip, when it is missing. A page is
read as its reader sees it, rendered by mandoc: there the dashes that roff
writes as \\- are plain `-`, and commands and options are set in bold, which is
what a command or option must be to count as documented (a plain "log" or
"check" in running text does not).
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "man"

# (page, module holding the typer `app`). The server's CLI always exists; the
# client's page is required from the moment its CLI does.
SERVER = ("plugbox.1", "plugbox_server.cli")
CLIENT = ("plug.1", "plugbox_client.cli")
CLI_PAGES = [SERVER] + ([CLIENT] if (ROOT / "plugbox_client" / "cli.py").exists() else [])

# Every page present, and the required ones even when missing, so that their
# absence fails here instead of going unnoticed.
PAGES = sorted({p.name for p in MAN.glob("*.[15]")} | {page for page, _ in CLI_PAGES})

HELP = {"--help", "-h"}


@pytest.fixture(scope="session")
def mandoc() -> str:
    path = shutil.which("mandoc")
    if path is None:
        pytest.fail("mandoc is not installed; install it (apt-get install mandoc) "
                    "to lint the man pages", pytrace=False)
    return path


def lint(mandoc: str, page: Path) -> subprocess.CompletedProcess:
    return subprocess.run([mandoc, "-T", "lint", "-W", "warning", str(page)],
                          capture_output=True, text=True, cwd=page.parent)


@pytest.mark.parametrize("name", PAGES)
def test_page_lints_clean(mandoc: str, name: str) -> None:
    page = MAN / name
    assert page.is_file(), f"man/{name} is missing"
    result = lint(mandoc, page)
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), \
        f"mandoc -T lint -W warning man/{name}:\n{result.stdout}{result.stderr}"


def test_lint_catches_a_broken_page(mandoc: str, tmp_path: Path) -> None:
    # The same call on a page with a known fault must complain, or the test above proves nothing.
    page = tmp_path / "broken.1"
    page.write_text(".TH BROKEN 1\n.SH NAME\nbroken \\- a page\n.SH DESCRIPTION\n.XX unknown\n")
    result = lint(mandoc, page)
    assert result.returncode != 0 and result.stdout + result.stderr != ""


def bold_words(mandoc: str, page: Path) -> set[str]:
    """The words a reader sees in bold: mandoc's ASCII output overstrikes them, `c\\bc`."""
    rendered = subprocess.run([mandoc, "-T", "ascii", str(page)], capture_output=True,
                              text=True, check=True).stdout
    # Drop underlining (italic), so bold italic reads as bold; `_\b_` is left
    # alone, as a bold underscore (post_upload) reads the same.
    rendered = re.sub(r"_\x08(?!_)", "", rendered)
    words: set[str] = set()
    for run in re.finditer(r"(?:(.)\x08\1)+", rendered):
        text = re.sub(r"(.)\x08\1", r"\1", run.group(0))
        words.update(re.findall(r"-*\w[\w-]*", text))
    return words


def cli_names(module: str) -> list[tuple[str, str]]:
    """(where, name) of every visible command and option of the module's typer app.

    Typer carries its own copy of click's classes, so they are told apart by
    what they have, not by isinstance against `click`.
    """
    app = importlib.import_module(module).app
    root = typer.main.get_command(app)
    found: list[tuple[str, str]] = []

    def walk(command, path: str, words: str) -> None:
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                found.extend((f"option of `{path}`", opt)
                             for opt in [*param.opts, *param.secondary_opts] if opt not in HELP)
        for name, sub in getattr(command, "commands", {}).items():
            if not sub.hidden:
                found.append(("command", f"{words}{name}"))  # a subcommand: "env get"
                walk(sub, f"{path} {name}", f"{words}{name} ")

    walk(root, root.name or module, "")
    return found


@pytest.mark.parametrize(("name", "module"), CLI_PAGES, ids=[page for page, _ in CLI_PAGES])
def test_page_shows_every_command_and_option(mandoc: str, name: str, module: str) -> None:
    page = MAN / name
    assert page.is_file(), f"man/{name} is missing, but {module} exists: write its page"
    names = cli_names(module)
    assert any(where == "command" for where, _ in names), f"{module}.app has no commands"
    shown = bold_words(mandoc, page)
    missing = [f"{where} {name!r}" for where, name in names if not set(name.split()) <= shown]
    assert not missing, f"man/{name} does not show these in bold: " + ", ".join(missing)


def test_bold_words_reads_what_roff_sets_in_bold(mandoc: str, tmp_path: Path) -> None:
    page = tmp_path / "t.1"
    page.write_text(".TH T 1 2026-01-01 T \"User Commands\"\n.SH NAME\nt \\- a page\n"
                    ".SH COMMANDS\n.TP\n.BR prune \" [\" \"\\-\\-keep \\fIN\\fP\" ]\n"
                    "Removes, like \\fBremove \\-v\\fR after \\fBpost_upload\\fR; see the log.\n")
    assert bold_words(mandoc, page) >= {"prune", "--keep", "remove", "-v", "post_upload"}
    assert not {"log", "N", "Removes"} & bold_words(mandoc, page)


# -- what a reader sees on each command's line ------------------------------------

def rendered(mandoc: str, page: Path) -> list[str]:
    """The page as `mandoc -T utf8` sets it at its usual width, bold and underline dropped."""
    text = subprocess.run([mandoc, "-T", "utf8", str(page)], capture_output=True,
                          text=True, check=True).stdout
    return re.sub(r".\x08", "", text).splitlines()


def section(lines: list[str], title: str) -> list[str]:
    """The lines of one section: after its title, up to the next title."""
    inside, found = False, []
    for line in lines:
        if line and not line[0].isspace():
            inside = line.strip() == title
        elif inside:
            found.append(line)
    return found


def balanced(line: str) -> bool:
    depth = 0
    for char in line:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


TAG = re.compile(r" {7}(\S.*)")  # a tag of .TP, or a synopsis line: at the page's own indent


def spills(mandoc: str, page: Path, commands: list[str], prog: str) -> list[str]:
    """Where a command's synopsis line, or its tag under COMMANDS, does not render whole.

    Each command must have a line of its own in SYNOPSIS (`PROG ... COMMAND ...`) and a
    tag under COMMANDS that starts with it, and each of those lines must close every
    bracket it opens: a tag broken across two input lines sets its tail in the body.
    """
    lines = rendered(mandoc, page)
    found = []
    synopsis = [m.group(1) for m in map(TAG.fullmatch, section(lines, "SYNOPSIS")) if m]
    tags = [m.group(1) for m in map(TAG.fullmatch, section(lines, "COMMANDS")) if m]
    for command in commands:
        words = command.split()
        mine = [line for line in synopsis if line.startswith(prog + " ")
                and " ".join(words) in " ".join(line.split())]
        if not mine:
            found.append(f"SYNOPSIS has no line for {command!r}")
        found += [f"SYNOPSIS: {line!r}" for line in mine if not balanced(line)]
        tag = [line for line in tags if line.split()[:len(words)] == words]
        if not tag:
            found.append(f"COMMANDS has no tag for {command!r}")
        found += [f"COMMANDS: {line!r}" for line in tag if not balanced(line.split("  ")[0])]
    return found


@pytest.mark.parametrize(("name", "module"), CLI_PAGES, ids=[page for page, _ in CLI_PAGES])
def test_each_command_renders_whole_on_its_lines(mandoc: str, name: str, module: str) -> None:
    commands = [name for where, name in cli_names(module) if where == "command"]
    prog = name.split(".")[0]
    assert commands
    assert spills(mandoc, MAN / name, commands, prog) == []


def test_spills_catches_a_tag_broken_across_lines(mandoc: str, tmp_path: Path) -> None:
    # The fault plug.1 once had: `[--keep` on the tag line, `N]` in the body.
    page = tmp_path / "t.1"
    page.write_text(".TH T 1 2026-01-01 T \"User Commands\"\n.SH NAME\nt \\- a page\n"
                    ".SH SYNOPSIS\n.B t prune\n.RB [ \\-\\-keep\n.IR N ]\n"
                    ".SH COMMANDS\n.TP\n.BR prune \" [\" \\-\\-keep\n.IR N ]\nDelete versions.\n")
    assert spills(mandoc, page, ["prune"], "t") == ["COMMANDS: 'prune [--keep'"]


def test_every_page_is_installed_with_the_package() -> None:
    # pyproject.toml's data-files put each page in share/man/manN of the environment
    # plugbox is installed into, where man(1) finds it when that bin/ is on PATH.
    import tomllib

    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    installed = {(directory, Path(path).name) for directory, paths in data_files.items() for path in paths}
    expected = {(f"share/man/man{name[-1]}", name) for name in PAGES}
    assert installed == expected


@pytest.mark.parametrize(("name", "module"), CLI_PAGES, ids=[page for page, _ in CLI_PAGES])
def test_every_option_that_takes_a_value_names_it(name: str, module: str) -> None:
    # Without a metavar, --help shows typer's own placeholder (`--host <str>`, TEXT);
    # the page and --help should both say what goes there (`--host HOST`).
    root = typer.main.get_command(importlib.import_module(module).app)
    unnamed = [f"{command} {param.opts[0]}"
               for command, sub in getattr(root, "commands", {}).items()
               for param in [*root.params, *sub.params]
               if param.param_type_name == "option" and not param.is_flag and not param.metavar]
    assert unnamed == []
