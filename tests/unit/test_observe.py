"""The observation helpers' pure parts: the hints after a failing test run, and the source shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from elpis_worker.observe import (
    ObservationPlan,
    failing_assertion,
    failing_definitions,
    failure_hints,
    observe,
    own_test_hint,
    render_source,
    trim_test_output,
    untouched_named_files,
)
from elpis_worker.tools import Toolbox
from elpis_worker.workspace import prepare_workspace


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "prices.py").write_text("PRICES = {'pear': 2}\n")
    (tmp_path / "shop" / "order.py").write_text("def total(fruit):\n    return PRICES[fruit]\n")
    return tmp_path


@pytest.mark.parametrize(
    ("output", "hint"),
    [
        (
            "E   NameError: name 'PRICES' is not defined",
            "PRICES is defined in shop/prices.py but is not imported where it is used: "
            "add `from shop.prices import PRICES`",
        ),
        ("E   NameError: name 'timedelta' is not defined", "add `from datetime import timedelta`"),
        ("E   NameError: name 'json' is not defined", "add `import json`"),
        ("E   NameError: name 'pi' is not defined", "add `from math import pi`"),
        (
            "E   ImportError: cannot import name 'DEFAULTS' from 'shop.order' (/w/shop/order.py)",
            "shop/order.py does not define DEFAULTS: define DEFAULTS in shop/order.py.",
        ),
        ("E       fixture 'text' not found", "there is no fixture 'text': write the test with no parameters"),
        (
            "no tests ran in 0.00s\nERROR: file or directory not found: tests/test_power.py\n",
            "tests/test_power.py does not exist yet, so no test ran: create it with write_file",
        ),
        # Seen in `make run`: the new test file held the function itself, not a test of it.
        ("\nno tests ran in 0.00s\n", "a test is a function named test_... in a file named test_*.py"),
    ],
)
def test_failure_hints_say_what_a_linter_would(repo: Path, output: str, hint: str) -> None:
    hints = failure_hints(output, repo)
    assert len(hints) == 1 and hint in hints[0], hints


def test_a_name_error_in_a_known_file_gets_the_exact_call(repo: Path) -> None:
    """From pytest's traceback the hint knows which file lacks the import and gives the write_file call
    that adds it (a write_file of import lines alone adds them to the module)."""
    output = (
        ">       return PRICES[fruit]\nE       NameError: name 'PRICES' is not defined\n\n"
        "shop/order.py:2: NameError\n"
        ">       return borrowed + timedelta(days=days)\nE       NameError: name 'timedelta' is not defined\n"
        "\nlibrary/gone.py:10: NameError\n"
    )
    prices, timedelta = failure_hints(output, repo)
    assert prices == (
        "hint: PRICES is defined in shop/prices.py but is not imported in shop/order.py: add `from "
        'shop.prices import PRICES` to it with write_file {"path": "shop/order.py", "content": "from '
        "shop.prices import PRICES\\n\"} (import lines alone are added to the file's imports)."
    )
    # A file the workspace does not have: the general hint.
    assert "add `from datetime import timedelta` at the top of that file" in timedelta


def test_a_key_error_of_an_augmented_assignment_gets_the_get_default_form(repo: Path) -> None:
    """pytest's frame of `self.stock[item] += quantity` raising KeyError (with or without the `^^^`
    marker line under it): the hint gives the same line with `.get(key, 0)`. A KeyError on a plain
    lookup, or an augmented assignment that raised something else, gets no such hint."""
    frame = (
        "    def restock(self, item, quantity):\n"
        ">       self.stock[item] += quantity\n"
        "{marker}"
        "E       KeyError: 'pen'\n\ninventory/store.py:10: KeyError\n"
    )
    for marker in ("", "        ^^^^^^^^^^^^^^^^\n"):
        # Two tests through the same line, one hint (the first test's missing key).
        twice = frame.format(marker=marker) + frame.format(marker=marker).replace("'pen'", "'ink'")
        (hint,) = failure_hints(twice, repo)
        assert hint == (
            "hint: `self.stock[item] += quantity` raises KeyError ('pen') when self.stock has no item yet: "
            "`self.stock[item] = self.stock.get(item, 0) + quantity` starts a missing key at 0."
        )
    assert failure_hints(">       return PRICES[fruit]\nE       KeyError: 'kiwi'\n", repo) == []
    assert failure_hints(">       totals[day] -= cost\nE       TypeError: bad operand\n", repo) == []
    (minus,) = failure_hints(">       totals[day] -= cost\nE       KeyError: 'mon'\n", repo)
    assert "`totals[day] = totals.get(day, 0) - cost`" in minus


def test_a_missing_test_file_hint_names_the_import_it_needs(repo: Path) -> None:
    """tests/test_order.py tests shop/order.py; tests/test_box.py the module that defines class Box."""
    (repo / "shop" / "crate.py").write_text("class Box:\n    pass\n\n\ndef _helper():\n    pass\n")
    missing = "no tests ran in 0.00s\nERROR: file or directory not found: tests/test_{}.py\n"
    (order,) = failure_hints(missing.format("order"), repo)
    assert "It imports what it tests (here `from shop.order import total`); each test is" in order
    (box,) = failure_hints(missing.format("box"), repo)
    assert "(here `from shop.crate import Box`)" in box
    (unknown,) = failure_hints(missing.format("weather"), repo)
    assert "It imports what it tests; each test is a function with no parameters" in unknown


def test_no_hint_for_an_unknown_name_or_a_plain_assertion(repo: Path) -> None:
    assert failure_hints("E   NameError: name 'frobnicate_widgets' is not defined", repo) == []
    assert failure_hints("E   assert 3 == 4", repo) == []


def test_untouched_named_files_are_the_tasks_source_files_no_change_touched(repo: Path) -> None:
    (repo / "tests").mkdir()
    (repo / "tests" / "test_order.py").write_text("def test_total():\n    pass\n")
    task = "Pears cost 3 in shop/prices.py, and shop/order.py must use them (tests/test_order.py)."
    diff = "diff --git a/shop/order.py b/shop/order.py\n--- a/shop/order.py\n+++ b/shop/order.py\n"
    assert untouched_named_files(task, repo, diff) == ["shop/prices.py"]
    both = diff + diff.replace("order.py", "prices.py")
    assert untouched_named_files(task, repo, both) == []
    # A file the task names that does not exist is not listed (the model may create it or not).
    assert untouched_named_files("Add shop/tax.py.", repo, diff) == []
    # Nor one the task says to leave alone, nor any while the change touches tests only (add a test).
    alone = "Fix shop/order.py; do not change shop/prices.py."
    assert untouched_named_files(alone, repo, diff) == []
    add_test = "Write tests for shop/prices.py in tests/test_order.py."
    test_diff = "diff --git a/tests/test_order.py b/tests/test_order.py\n"
    assert untouched_named_files(add_test, repo, test_diff) == []


def test_render_source_numbers_lines_and_windows_a_long_file(tmp_path: Path) -> None:
    (tmp_path / "long.py").write_text("".join(f"x{n} = {n}\n" for n in range(1, 301)))
    shown = render_source(tmp_path, "long.py", [200])
    assert shown.startswith("--- long.py (lines 160-279 of 300)")
    assert " 200| x200 = 200" in shown and "x1 = 1\n" not in shown


def test_trim_test_output_keeps_the_traceback_and_summary() -> None:
    noise = "\n".join(f"PASSED tests/test_a.py::test_{n}" for n in range(200))
    output = f"{noise}\n____ test_x ____\n>   assert f() == 2\nE   assert 1 == 2\nFAILED tests/t.py::test_x\n"
    trimmed = trim_test_output(output, max_lines=20)
    assert "E   assert 1 == 2" in trimmed and "FAILED tests/t.py::test_x" in trimmed
    assert len(trimmed.splitlines()) <= 21


def test_failing_definitions_show_the_code_the_failing_lines_use(tmp_path: Path) -> None:
    """Seen in the eval: the model added slugify but never opened post_url, the function the failing
    assertion calls; and it fixed describe() while the failing line read config.UNIT. After an edit the
    result shows those definitions as the files are now."""
    (tmp_path / "blog").mkdir()
    (tmp_path / "blog" / "posts.py").write_text(
        '"""Posts."""\n\n\ndef post_url(title):\n    return "/posts/" + title\n'
    )
    (tmp_path / "blog" / "config.py").write_text('UNIT = "F"\nSTATION = "Harbour"\n')
    (tmp_path / "blog" / "prices.py").write_text("PRICES = {}\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_posts.py").write_text("def helper():\n    return 1\n")
    output = (
        "    def test_post_url():\n"
        '>       assert post_url("Hello World") == "/posts/hello-world"\n'
        "E       AssertionError\n"
        '>       assert config.UNIT == "C" and helper() == 1 and len([]) == 0\n'
        ">       total = PRICES[fruit]\n"
    )
    shown = failing_definitions(output, tmp_path)
    assert shown == [
        "The failing line uses post_url; blog/posts.py has now:\n"
        "   4| def post_url(title):\n"
        '   5|     return "/posts/" + title',
        'The failing line uses UNIT; blog/config.py has now:\n   1| UNIT = "F"',
    ]
    # Test files' own helpers and builtins are not shown, and a name defined twice is ambiguous.
    (tmp_path / "blog" / "other.py").write_text("def post_url(x):\n    return x\n")
    assert failing_definitions(output, tmp_path) == [
        shown[1],
        "The failing line uses PRICES; blog/prices.py has now:\n   1| PRICES = {}",
    ]
    # A name is shown once even where another definition's text mentions it.
    (tmp_path / "blog" / "other.py").unlink()
    (tmp_path / "blog" / "posts.py").write_text("def post_url(title):\n    return PRICES\n")
    assert [s.split(";")[0] for s in failing_definitions(output, tmp_path, limit=3)] == [
        "The failing line uses post_url",
        "The failing line uses UNIT",
        "The failing line uses PRICES",
    ]
    # A plain traceback without pytest's `>` lines shows nothing.
    assert failing_definitions("Traceback ...\nAssertionError", tmp_path) == []


def test_own_test_hint_when_the_new_test_fails_on_its_own_assertions() -> None:
    """Seen in the eval: asked to add tests, the model asserted 100.05 after a deposit of 100, then
    tried to change the (protected) code under test."""
    output = (
        ">       assert account.balance == 100.05\nE       AssertionError: assert 100.0 == 100.05\n"
        "FAILED tests/test_savings.py::test_deposit - assert 100.0 == 100.05\n1 failed in 0.01s\n"
    )
    hint = own_test_hint(output, "tests/test_savings.py")
    assert hint is not None and "the ones you wrote in tests/test_savings.py" in hint
    # Not for a source file, nor when another test file fails too, nor for an error that is no assertion.
    assert own_test_hint(output, "bank/savings.py") is None
    other = output + "FAILED tests/test_bank.py::test_x - assert 1 == 2\n"
    assert own_test_hint(other, "tests/test_savings.py") is None
    error = "E   NameError: name 'x' is not defined\nFAILED tests/test_savings.py::test_deposit - NameError\n"
    assert own_test_hint(error, "tests/test_savings.py") is None


def test_failing_assertion_is_the_first_failures_line_and_message() -> None:
    output = (
        "___ test_leading_zeros ___\n    def test_leading_zeros():\n"
        '>       assert format_duration(65) == "01:05"\n'
        "E       AssertionError: assert '01:5' == '01:05'\n"
        "tests/test_timer.py:5: AssertionError\n___ test_other ___\n"
        '>       assert format_duration(5) == "00:05"\nE       AssertionError\n'
    )
    assert failing_assertion(output) == (
        ">       assert format_duration(65) == \"01:05\"\nE       AssertionError: assert '01:5' == '01:05'"
    )
    assert failing_assertion("Traceback...\nValueError: x") == ""


def test_the_opening_observations_of_a_workspace(tmp_path: Path) -> None:
    """What the first prompt shows, from a real workspace and a real test run: the map, the failing
    run trimmed to its traceback, then the source of the files the traceback and the task name."""
    source = tmp_path / "source"
    (source / "calc").mkdir(parents=True)
    (source / "tests").mkdir()
    (source / "calc" / "__init__.py").write_text("")
    (source / "calc" / "ops.py").write_text("def double(x):\n    return x + 2\n")
    (source / "calc" / "notes.py").write_text("NOTE = 'see ops'\n")
    (source / "tests" / "test_ops.py").write_text(
        "from calc.ops import double\n\n\ndef test_double():\n    assert double(5) == 10\n"
    )
    root = prepare_workspace(str(source), None, tmp_path / "ws")
    command = "python -m pytest -q"
    tools = Toolbox(root, command, 60.0, 8000, 8000)
    instruction = "double() is wrong; calc/notes.py says where to look."

    def seen(name: str, tests_output: str = ""):
        return observe(name, root, instruction, command, lambda: tools.call("run_tests", {}), tests_output)

    mapped = seen(ObservationPlan.REPO_MAP)
    assert mapped.content.startswith("Repository map:\n") and "calc/ops.py" in mapped.output
    assert "double" in mapped.output and mapped.tests is None

    tests = seen(ObservationPlan.TESTS)
    assert tests.tests is not None and tests.tests.tests_passed is False
    assert tests.detail.tests_run and tests.detail.failures == 1 and tests.exit_code == 1
    assert tests.content.startswith(f"The tests fail now ({command}):\n")
    assert "assert double(5) == 10" in tests.content

    sources = seen(ObservationPlan.SOURCES, tests.output)
    # The traceback's files first (the code and the test that calls it), then the file the task names.
    assert set(sources.detail.files[:2]) == {"tests/test_ops.py", "calc/ops.py"}
    assert sources.detail.files[2] == "calc/notes.py"
    assert sources.content.startswith("Source of the files involved:\n")
    assert "return x + 2" in sources.output and "NOTE = 'see ops'" in sources.output

    nothing = observe(
        ObservationPlan.SOURCES, root, "make it faster", None, lambda: tools.call("run_tests", {}), ""
    )
    assert nothing.detail.files == []
    assert nothing.content == "No workspace file is named in the test output or the task."
