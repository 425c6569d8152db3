"""pytest-xdist scheduling by cost, for tests/conftest.py (which holds the cost table and the hooks).

xdist's `--dist loadfile` hands out whole files, the files with the most tests first: test count, not time, so the
heavy single-test files ran last. Here a unit of work is a file, or a test for the files the cost table lists test by
test (their tests share no module state), and units go out by their cost in seconds, the longest first, with two
exceptions:

- units that use the shared tiny pipeline (conftest.py lists them at collection) wait until it is built (a worker
  builds it in a thread from the start), unless nothing else is left: the workers run the other tests meanwhile
  rather than block on its lock;
- a worker always holds the next unit before its current one ends (it needs the next test to know which fixtures to
  tear down), so the unit queued behind a long one is a cheap one: a long unit is only committed to a worker shortly
  before that worker can start it, never behind another long unit while the other worker runs out of work.

`FSD_SCHEDULE_REPORT=1 pytest` prints which worker ran which unit when, and the measured costs as a table to paste
into conftest.py (see there).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

LOOKAHEAD_S = 10.0  # a worker whose remaining work is longer than this gets a cheap unit queued next ...
FILLER_S = 3.0  # ... one of at most this many seconds, when there is one
DEFAULT_S_PER_TEST = 1.0  # a file the table does not know yet (a new one): about what most of the suite takes


def unit_key(nodeid: str, split: set[str]) -> str:
    """The cost table's key of the unit a test belongs to: its file name ("test_x.py"), or for a file split into
    tests its file name and function, parameters left out ("test_x.py::test_y")."""
    file, _, rest = nodeid.partition("::")
    name = Path(file).name
    return f"{name}::{rest.split('[', 1)[0]}" if name in split else name


def split_files(costs: dict[str, float]) -> set[str]:
    """The files the table lists test by test."""
    return {key.split("::", 1)[0] for key in costs if "::" in key}


class CostScheduling(LoadScopeScheduling):
    """LoadScopeScheduling (xdist) with units and their order chosen as the module docstring says."""

    def __init__(self, config: pytest.Config, log, costs: dict[str, float], pipeline_ready: Callable[[], bool],
                 pipeline_tests: Callable[[], set[str]]) -> None:
        super().__init__(config, log)
        self.costs, self.split = costs, split_files(costs)
        self.pipeline_ready, self.pipeline_tests = pipeline_ready, pipeline_tests
        self.unit_cost: dict[str, float] = {}
        self.needs_pipeline: set[str] = set()
        self.order: dict[str, int] = {}
        self.assignments: list[tuple[float, str, str, float]] = []  # (time, worker, unit, cost), in turn

    def _split_scope(self, nodeid: str) -> str:
        return unit_key(nodeid, self.split)

    def schedule(self) -> None:
        if self.collection is None and self.collection_is_completed:
            self._measure_units(next(iter(self.registered_collections.values()), []))
        super().schedule()

    def _measure_units(self, collection: Iterable[str]) -> None:
        sizes: dict[str, int] = {}
        uses = self.pipeline_tests()
        for nodeid in collection:
            unit = self._split_scope(nodeid)
            sizes[unit] = sizes.get(unit, 0) + 1
            self.order.setdefault(unit, len(self.order))
            if nodeid in uses:
                self.needs_pipeline.add(unit)
        self.unit_cost = {unit: float(self.costs.get(unit, DEFAULT_S_PER_TEST * n)) for unit, n in sizes.items()}

    def _remaining(self, node) -> float:
        """The estimated seconds of the work the node holds and has not finished."""
        out = 0.0
        for unit, tests in self.assigned_work.get(node, {}).items():
            if tests:
                out += self.unit_cost.get(unit, DEFAULT_S_PER_TEST) * list(tests.values()).count(False) / len(tests)
        return out

    def _choose(self, node) -> str:
        queued = list(self.workqueue)
        ready = self.pipeline_ready()
        eligible = [u for u in queued if ready or u not in self.needs_pipeline] or queued
        cost = self.unit_cost.get
        if self._remaining(node) > LOOKAHEAD_S:
            fillers = [u for u in eligible if cost(u, DEFAULT_S_PER_TEST) <= FILLER_S]
            if fillers:
                return min(fillers, key=lambda u: (cost(u, DEFAULT_S_PER_TEST), self.order.get(u, 0)))
        return max(eligible, key=lambda u: (cost(u, DEFAULT_S_PER_TEST), -self.order.get(u, 0)))

    def _assign_work_unit(self, node) -> None:
        unit = self._choose(node)
        work_unit = self.workqueue.pop(unit)
        self.assigned_work.setdefault(node, {})[unit] = work_unit
        self.assignments.append((time.time(), node.gateway.id, unit,
                                 self.unit_cost.get(unit, DEFAULT_S_PER_TEST)))
        collection = self.registered_collections[node]
        node.send_runtest_some([collection.index(nodeid) for nodeid, done in work_unit.items() if not done])

    def _reschedule(self, node) -> None:
        """As xdist's, but a node gets its next unit once only one of its tests is left (not two): the last one
        cannot start before the worker knows what follows it."""
        if node.shutting_down:
            return
        if not self.workqueue:
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) > 1:
            return
        self._assign_work_unit(node)


class ScheduleReport:
    """What each unit cost and where and when it ran, from the test reports the controller receives."""

    WAIT = "tiny_pipeline_wait"  # user property: seconds a test's setup spent building or waiting for the pipeline

    def __init__(self, split: set[str]) -> None:
        self.split = split
        self.units: dict[str, dict] = {}
        self.started = time.time()

    def add(self, report: pytest.TestReport) -> None:
        unit = self.units.setdefault(unit_key(report.nodeid, self.split),
                                     {"worker": "-", "start": float("inf"), "stop": 0.0, "seconds": 0.0, "tests": set()})
        node = getattr(report, "node", None)
        unit["worker"] = node.gateway.id if node is not None else unit["worker"]
        unit["start"] = min(unit["start"], getattr(report, "start", time.time()) - self.started)
        unit["stop"] = max(unit["stop"], getattr(report, "stop", time.time()) - self.started)
        waited = sum(float(v) for k, v in report.user_properties if k == self.WAIT)
        unit["seconds"] += report.duration - waited
        unit["tests"].add(report.nodeid)

    def lines(self, assignments: list[tuple[float, str, str, float]]) -> list[str]:
        out = ["units in the order they started: worker, given at, start-end (s from the start), seconds taken, "
               "estimated", ""]
        given = {unit: (at - self.started, cost) for at, _, unit, cost in assignments}
        for name, unit in sorted(self.units.items(), key=lambda kv: kv[1]["start"]):
            at, cost = given.get(name, (float("nan"), float("nan")))
            out.append(f"{unit['worker']:>4} {at:7.1f} {unit['start']:7.1f}-{unit['stop']:7.1f} "
                       f"{unit['seconds']:7.1f} {cost:7.1f}  {name}")
        out += ["", "COSTS = {  # measured: paste into tests/conftest.py"]
        out += [f"    {json.dumps(name)}: {max(0.1, round(unit['seconds'], 1))},"
                for name, unit in sorted(self.units.items(), key=lambda kv: -kv[1]["seconds"])]
        return [*out, "}"]
