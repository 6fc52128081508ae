"""The review turn's probe: the visible tests' calls of the changed functions and variations of them, run
on the changed code in the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from elpis_worker.probe import PROBE_CALLS, PROBE_RESULT_CHARS, probe_calls
from elpis_worker.tools import Toolbox
from elpis_worker.workspace import prepare_workspace, workspace_diff

PAGES = '''"""Pages numbered from 1."""


def page_count(items, size):
    return (len(items) + size - 1) // size


def page_items(items, page, size):
    start = page * size
    return items[start:start + size]
'''

TESTS = """from listing.pages import page_count, page_items


def test_page_count():
    assert page_count(list(range(10)), 3) == 4


def test_first_page():
    items = list(range(10))
    assert page_items(items, 1, 3) == [0, 1, 2]


def test_each_page():
    for page in (1, 2):
        assert page_items(list(range(10)), page, 3)
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    (source / "listing").mkdir(parents=True)
    (source / "tests").mkdir()
    (source / "listing" / "__init__.py").write_text("")
    (source / "listing" / "pages.py").write_text(PAGES)
    (source / "tests" / "test_pages.py").write_text(TESTS)
    return prepare_workspace(str(source), None, tmp_path / "ws")


def overfit(root: Path) -> None:
    """The eval's wrong success: page 1 special-cased, every later page still skipped."""
    path = root / "listing" / "pages.py"
    path.write_text(
        path.read_text().replace(
            "    start = page * size\n",
            "    if page == 1:\n        start = 0\n    else:\n        start = page * size\n",
        )
    )


def test_the_probe_shows_the_overfit_fix_on_the_next_page(workspace: Path) -> None:
    """Only the changed function is called (page_count is untouched); the test's local `items` is put in;
    a call that uses a loop variable is left out; the varied calls follow the test's own; the results
    come from the changed code, run by the toolbox."""
    overfit(workspace)
    calls = [expr for _, expr in probe_calls(workspace, workspace_diff(workspace))]
    assert calls == [
        "page_items(list(range(10)), 1, 3)",
        "page_items(list(range(10)), 2, 3)",
        "page_items(list(range(10)), 1, 4)",
    ]
    shown = Toolbox(workspace, None, 20.0, 8000, 8000).probe()
    assert shown.splitlines() == [
        "page_items(list(range(10)), 1, 3) -> [0, 1, 2]",
        "page_items(list(range(10)), 2, 3) -> [6, 7, 8]",
        "page_items(list(range(10)), 1, 4) -> [0, 1, 2, 3]",
    ]


def test_the_probe_shows_errors_and_stops_slow_calls(workspace: Path) -> None:
    """A call that raises shows the exception; one that never returns is stopped and says so; strings
    and lists are varied too (upper case, spaced out, empty); no more than PROBE_CALLS calls."""
    (workspace / "listing" / "pages.py").write_text(
        PAGES.replace(
            "    start = page * size\n", "    while page > 1:\n        pass\n    start = (page - 1) * size\n"
        )
        + "\n\ndef title(text, words):\n    return text.title() + words[0]\n"
    )
    (workspace / "tests" / "test_title.py").write_text(
        "from listing.pages import title\n\n\ndef test_title():\n    assert title('hello world', ['!'])\n"
    )
    shown = Toolbox(workspace, None, 30.0, 8000, 8000).probe().splitlines()
    assert "page_items(list(range(10)), 2, 3) -> raises TimeoutError: took over 2 s" in shown
    assert "title('hello world', []) -> raises IndexError: list index out of range" in shown
    assert len(shown) == PROBE_CALLS


def test_nothing_to_probe(workspace: Path) -> None:
    """No change, or a change outside any function the tests call: nothing is run or shown."""
    tools = Toolbox(workspace, None, 20.0, 8000, 8000)
    assert tools.probe() == ""
    pages = workspace / "listing" / "pages.py"
    pages.write_text(pages.read_text().replace('"""Pages numbered from 1."""', '"""Pages, from 1."""'))
    assert probe_calls(workspace, workspace_diff(workspace)) == []
    assert tools.probe() == ""


def test_a_long_result_keeps_its_start_and_end(workspace: Path) -> None:
    """week_of's wrong `+ [0]` came after the cut: a long result shows its first two thirds and its end."""
    pages = workspace / "listing" / "pages.py"
    pages.write_text(
        pages.read_text().replace("    return items[start:start + size]\n", "    return [0] * 99 + [7]\n")
    )
    first = Toolbox(workspace, None, 20.0, 8000, 8000).probe().splitlines()[0]
    value = first.removeprefix("page_items(list(range(10)), 1, 3) -> ")
    assert value.startswith("[0, 0,") and value.endswith(", 0, 7]") and " [...] " in value
    assert len(value) == PROBE_RESULT_CHARS + len(" [...] ")
