"""The read hand-off of a client connection (``ReadTurn``), driven through every order of events."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tesseract.net.read_turn import BACKGROUND, NOBODY, ReadTurn


class ReadTurnMachine(RuleBasedStateMachine):
    """Calls start and stop waiting, the background task looks and stops, in any order; a model of
    who must read is checked against the state object after every step."""

    @initialize()
    def start(self) -> None:
        self.turn: ReadTurn[int] = ReadTurn()
        self.waiting: list[int] = []  # the model: calls in the order they began waiting
        self.reader: int | object = NOBODY
        self.background_running = True
        self.next_call = 0

    @rule()
    def a_call_starts_waiting(self) -> None:
        call = self.next_call
        self.next_call += 1
        reads = self.turn.start_waiting(call)
        self.waiting.append(call)
        if self.reader is NOBODY:
            self.reader = call
        assert reads == (self.reader == call)

    @precondition(lambda self: self.waiting)
    @rule(data=st.data())
    def a_call_stops_waiting(self, data: st.DataObject) -> None:
        call = data.draw(st.sampled_from(self.waiting))
        successor = self.turn.stop_waiting(call)
        self.waiting.remove(call)
        if self.reader == call:
            self.reader = self.waiting[0] if self.waiting else NOBODY
            assert successor == self.reader  # the one to wake: the next call, or the background task
        else:
            assert successor is None

    @precondition(lambda self: self.background_running)
    @rule()
    def the_background_task_looks(self) -> None:
        reads = self.turn.take_background()
        if self.reader is NOBODY:
            self.reader = BACKGROUND
        assert reads == (self.reader is BACKGROUND)

    @precondition(lambda self: self.background_running)
    @rule()
    def the_background_task_stops(self) -> None:
        self.background_running = False
        successor = self.turn.background_stopped()
        if self.reader is BACKGROUND:
            self.reader = self.waiting[0] if self.waiting else NOBODY
            assert successor == (self.reader if self.waiting else None)
        else:
            assert successor is None

    @invariant()
    def matches_the_model(self) -> None:
        assert self.turn.reader == self.reader
        assert self.turn.waiting == self.waiting

    @invariant()
    def someone_reads_while_a_call_waits(self) -> None:
        if self.waiting:
            assert self.turn.reader is not NOBODY

    @invariant()
    def a_reading_call_is_a_waiting_call(self) -> None:
        reader = self.turn.reader
        assert reader in (NOBODY, BACKGROUND) or reader in self.waiting


TestReadTurn = ReadTurnMachine.TestCase


def test_the_background_task_never_takes_the_turn_from_a_call() -> None:
    turn: ReadTurn[str] = ReadTurn()
    assert turn.start_waiting("a")
    assert not turn.take_background()
    assert not turn.start_waiting("b")
    assert turn.stop_waiting("a") == "b"
    assert turn.stop_waiting("b") is NOBODY
    assert turn.take_background()
    assert not turn.start_waiting("c")  # it waits for the background task to route its reply
    assert turn.stop_waiting("c") is None
    turn.start_waiting("d")
    with pytest.raises(ValueError):
        turn.start_waiting("d")
