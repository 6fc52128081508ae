"""A tool call as the loop makes it, around the tool itself: the policy's refusal and finish gate, the
check after each edit (the task's tests run at once, the failing code and hints appended to the
result), the reminder after an edit that changed nothing, the undo of an edit that goes back to files
the tests already failed with, and the undo of an edit that broke tests.

The agent loop (elpis_worker/agent.py) decides what to call and records what happened; this module
decides what a call does to the workspace and what its result says.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from elpis_worker.merge import same_program
from elpis_worker.observe import (
    failing_assertion,
    failing_definitions,
    failing_places,
    failure_hints,
    own_test_hint,
    trim_test_output,
)
from elpis_worker.policy import ToolPolicy
from elpis_worker.store import TaskStore
from elpis_worker.tools import Toolbox, ToolResult, regression_between
from elpis_worker.turns import Action, diff_sha
from elpis_worker.workspace import WorkspaceError, workspace_diff
from models.records import EDIT_TOOLS, TurnPlan

log = logging.getLogger(__name__)

# An ambiguous edit (its `search` occurs in several places) is tried at each place when there are at most
# this many: one test run a place.
AMBIGUOUS_PLACES_TRIED = 4


class ToolRunner:
    """Runs one task's tool calls. The store is read for the task's last test run (what a regression
    is measured against, what a no-change edit is reminded of)."""

    def __init__(
        self,
        toolbox: Toolbox,
        policy: ToolPolicy,
        store: TaskStore,
        task_id: int,
        *,
        undo_regressions: bool,
        undo_revisits: bool = True,
    ) -> None:
        self.toolbox, self.policy, self.store, self.task_id = toolbox, policy, store, task_id
        self.undo_regressions, self.undo_revisits = undo_regressions, undo_revisits

    def call(
        self,
        action: Action,
        plan: TurnPlan,
        failed_check: str | None = None,
        failing_states: Mapping[str, int] | None = None,
    ) -> ToolResult:
        """Make the call. `failed_check` is the code of the agent's last `python` check that failed (and
        none passed since): run again after an edit that leaves the tests passing. `failing_states` are
        the workspace states (diff_sha of the workspace diff) the task's tests were seen failing in, each
        with the turn that saw it (0: the opening run): an edit back to one is undone (`undo_revisits`)."""
        refused = self.policy.refusal(action, plan)
        if refused is not None:
            return refused
        if self.policy.gates_finish(action):
            check = self.toolbox.call("run_tests", {})
            done = (
                self.toolbox.call("finish", action.args)
                if check.tests_passed
                else ToolResult(ok=False, output="")
            )
            return self.policy.finish_verdict(check, done)
        # An edit tool's success is followed by a run of the task's tests (the check after each edit).
        checked = action.tool in EDIT_TOOLS and bool(self.toolbox.test_command)
        before = self._snapshot(action.args.get("path")) if checked else None
        result = self.toolbox.call(action.tool, action.args)
        if checked and 1 < result.occurrences <= AMBIGUOUS_PLACES_TRIED:
            result = self._place_ambiguous_edit(action, result)
        changed = result.ok and not result.output.startswith("no change")
        if action.tool in EDIT_TOOLS and result.ok and not changed:
            # An edit that leaves the file as it was is a failed attempt, not a tool that worked: the
            # emotion model appraises it as one (the 1.5B model rewrote its own wrong code three turns
            # running, calm, at temperature 0.2), and the result says how the code fails.
            result.ok, result.error_kind = False, "no_change"
            if checked:
                self._remind_failure(result, action.args["path"])
        if changed and checked and before is not None and self.undo_revisits:
            if self._undo_restyle(result, action.args["path"], before[0]):
                changed = False
            elif failing_states:
                self._undo_revisit(result, action.args["path"], before[0], failing_states)
        if changed and checked and not result.reverted:
            self._check_edit(result, action.args["path"], before)
            if result.tests_passed and failed_check:
                self._recheck(result, failed_check)
        return result

    def _recheck(self, result: ToolResult, code: str) -> None:
        """The agent's failed check, run again once an edit leaves the tests passing: the edit meant to
        fix what it found is judged by it too. Seen in the eval: `page_items(..., 2, 3) == [3, 4, 5]`
        failed, the model rewrote the code (still wrong for page 2) and, the tests passing, was allowed
        only to finish."""
        again = self.toolbox.call("python", {"code": code})
        if again.ok:
            result.output += "\nYour check that failed before, run again: it passes now."
            return
        result.check_failed, result.check_crashed = True, again.check_failed
        result.output += f"\nYour check that failed before, run again, still fails:\n{again.output}"

    def _check_edit(self, result: ToolResult, path: str, before: tuple[bytes | None] | None) -> None:
        """The check after each edit: the model sees at once whether the change fixed the tests."""
        check = self.toolbox.call("run_tests", {})
        verdict = "pass" if check.tests_passed else "fail"
        result.output += f"\nTests after this change: {verdict}"
        result.tests_run, result.tests_passed = True, check.tests_passed
        result.failures, result.exit_code, result.test_output = check.failures, check.exit_code, check.output
        if check.tests_passed:
            return
        result.output += f"\n{trim_test_output(check.output, max_lines=20)}"
        if before is not None and self.undo_regressions:
            self._undo_regression(result, path, before[0], check.output)
        root = self.toolbox.root
        # As the files are now (after an undo too): the code the failing line runs through.
        result.output += "".join(f"\n{d}" for d in failing_definitions(check.output, root))
        own = own_test_hint(check.output, self.toolbox.relative(path))
        result.output += f"\n{own}" if own else ""
        # The hints last, nearest the next reply: with the definitions after it, the 1.5B model
        # followed the hint's import into the file named last (blog/utils.py, not blog/posts.py).
        result.output += "".join(f"\n{h}" for h in failure_hints(check.output, root))

    def _place_ambiguous_edit(self, action: Action, refused: ToolResult) -> ToolResult:
        """An edit whose `search` occurs in several places (`self.balance += amount` in deposit and in
        withdraw: seen in the eval, the 1.5B model then failed four turns running to write a search
        that matches once). The edit is tried at each place alone, with the tests run after each; when
        exactly one place makes them pass, that is the edit made. Otherwise the refusal stands, saying
        what the tries showed."""
        path, search, replace = action.args["path"], action.args["search"], action.args["replace"]
        try:
            original = self.toolbox.snapshot(path)
        except (WorkspaceError, OSError):
            return refused
        passing = []
        for place in range(refused.occurrences):
            tried = self.toolbox.edit_occurrence(path, search, replace, place)
            if tried.ok and tried.changed_files and self.toolbox.call("run_tests", {}).tests_passed:
                passing.append(place)
            try:
                self.toolbox.restore(path, original)
            except (WorkspaceError, OSError) as exc:
                log.warning("task %s: could not undo a try of an edit of %s: %s", self.task_id, path, exc)
                return refused
        if len(passing) != 1:
            refused.output += (
                f"\nTried at each place alone: the tests pass with {len(passing) or 'none'} of them."
            )
            return refused
        made = self.toolbox.edit_occurrence(path, search, replace, passing[0])
        if made.ok:
            made.output += "\n(the only one of those places where this change makes the tests pass)"
        return made

    def _remind_failure(self, result: ToolResult, path: str) -> None:
        """An edit that changed nothing while the tests fail: the model wrote what is already there,
        believing it right (seen in the eval, three turns running). The result says the code as it
        stands fails, and how; where the failing line runs through other files only, it names them and
        their code (weather_units_config: report.py rewritten unchanged three times while the failing
        line read UNIT from config.py)."""
        task = self.store.load_task(self.task_id)
        if task.test_passed is not False:
            return
        output = task.test_output or ""
        shown = failing_assertion(output)
        if not shown:
            return
        result.output += f"\nWith the code as it is, the tests fail:\n{shown}\n"
        try:
            edited = self.toolbox.relative(path)
        except WorkspaceError:
            edited = path
        # The definitions the shown (first) failing line uses.
        places = failing_places(shown, self.toolbox.root)
        if places and all(p.path != edited for p in places):
            files = ", ".join(dict.fromkeys(p.path for p in places))
            result.output += (
                f"That line does not run through {edited}.\n"
                + "\n".join(p.shown() for p in places)
                + f"\nChange {files} so that the failing line holds."
            )
        else:
            result.output += "So this code is wrong: change it so that the failing line holds."

    def _snapshot(self, path: object) -> tuple[bytes | None] | None:
        """The file an edit is about to change, as it is now; None where it cannot be read (the tool
        itself will refuse such a path)."""
        if not (self.undo_regressions or self.undo_revisits) or not isinstance(path, str):
            return None
        try:
            return (self.toolbox.snapshot(path),)
        except (WorkspaceError, OSError):
            return None

    def _undo_restyle(self, result: ToolResult, path: str, before: bytes | None) -> bool:
        """An edit of a Python file after which the file parses to the same program as before (only quotes,
        spacing or comments differ) is undone while the tests fail: it cannot change their result. Seen in
        the eval: word_count_spaces's first edit wrote `text.split(' ')` for the given `text.split(" ")`,
        the model took it for its fix, and wrote it twice more. The result says so, as for an edit that
        changed nothing, and shows how the code as it is fails."""
        if before is None or not path.endswith(".py"):
            return False
        try:
            now = self.toolbox.snapshot(path)
        except (WorkspaceError, OSError):
            return False
        if not same_program(before, now):
            return False
        if self.store.load_task(self.task_id).test_passed is not False:
            return False  # the tests pass: a change of style or comments may be what the task asks
        if not self._undo(result, path, before, "no_change"):
            return False
        result.output = (
            f"no change to the code: {path} as written parses to the same Python as before (only quotes, "
            "spacing or comments differ), so it does exactly what it did; the edit was undone."
        )
        self._remind_failure(result, path)
        return True

    def _undo_revisit(
        self, result: ToolResult, path: str, before: bytes | None, failing_states: Mapping[str, int]
    ) -> None:
        """An edit that puts the files back exactly as they were when the tests were seen failing is undone
        before the tests run again: that code is known to fail, and running it again teaches nothing. Seen
        in the eval: page_items went back and forth between `start = page * size` (the bug as given) and
        `start = page * size + 1`, three of six turns each a return to a version already tried. The call
        then counts as failed, so it is excluded from the next turn as well."""
        try:
            seen = failing_states.get(diff_sha(workspace_diff(self.toolbox.root)))
        except WorkspaceError as exc:
            log.warning("task %s: could not diff the workspace after an edit: %s", self.task_id, exc)
            return
        if seen is None or not self._undo(result, path, before, "revisited"):
            return
        when = "at the start, before any change" if seen == 0 else f"after turn {seen}"
        result.output += (
            f"\nThis change puts the files back exactly as they were {when}, when the tests failed: that "
            f"code is known to fail, so the change was undone ({path} is as it was before this call). "
            "Make a change that was not tried yet."
        )

    def _undo(self, result: ToolResult, path: str, before: bytes | None, why: str) -> bool:
        """Put `path` back as `before` held it (None: the edit created it) and mark `result` as an edit that
        failed and was undone, for reason `why` (its error_kind). False where the file could not be put
        back: the edit then stands."""
        try:
            self.toolbox.restore(path, before)
        except (WorkspaceError, OSError) as exc:
            log.warning("task %s: could not undo the edit of %s: %s", self.task_id, path, exc)
            return False
        result.ok, result.error_kind, result.reverted, result.changed_files = False, why, True, True
        return True

    def _undo_regression(self, result: ToolResult, path: str, before: bytes | None, output: str) -> None:
        """An edit that broke tests which did not fail before is undone at once: the next attempt starts
        again from the last good state instead of building on a wrong fix (Agentless's candidate
        patches, one at a time). The call then counts as failed, so it is excluded from the next turn."""
        previous = self.store.load_task(self.task_id).test_output or ""
        # The tests of a file this edit created are new (a test the task asked for), not broken ones.
        created = [self.toolbox.relative(path)] if before is None else []
        why = regression_between(previous, output, new_files=created)
        if why is None or not self._undo(result, path, before, "regression"):
            return
        result.output += (
            f"\nThis change made things worse ({why}), so it was undone: {path} is back as it was. "
            "Fix the original failure in a different way."
        )
