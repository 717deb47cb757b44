"""The connection caps of a stream server (``Admission``), sans-IO."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tesseract.net.admission import Admission


class Conn:
    def __init__(self, name: str, idle: bool = True) -> None:
        self.name = name
        self.idle = idle

    def __repr__(self) -> str:
        return self.name


def admission(total: int, per_source: int) -> Admission[Conn]:
    return Admission(total, per_source, idle=lambda c: c.idle)


def test_an_address_over_its_share_is_refused_and_disturbs_nobody() -> None:
    table = admission(10, 2)
    a, b = Conn("a"), Conn("b")
    assert table.admit(a, "x") == (True, []) and table.admit(b, "x") == (True, [])
    assert table.admit(Conn("c"), "x") == (False, [])
    assert table.count("x") == 2 and len(table) == 2
    assert table.admit(Conn("d"), "y").admitted


def test_past_the_total_cap_the_newest_idle_connection_is_shed() -> None:
    table = admission(3, 3)
    old, busy, new = Conn("old"), Conn("busy", idle=False), Conn("new")
    for conn, source in ((old, "p"), (busy, "q"), (new, "r")):
        assert table.admit(conn, source).admitted
    newcomer = Conn("newcomer")
    assert table.admit(newcomer, "s") == (True, [new])
    assert len(table) == 3 and table.count("r") == 0
    # Now newcomer is the newest idle one.
    assert table.admit(Conn("next"), "t") == (True, [newcomer])


def test_when_nobody_is_idle_a_new_connection_is_refused() -> None:
    table = admission(2, 2)
    first, second = Conn("1", idle=False), Conn("2", idle=False)
    table.admit(first, "p")
    table.admit(second, "q")
    assert table.admit(Conn("3"), "r") == (False, [])
    second.idle = True
    assert table.admit(Conn("3"), "r") == (True, [second])


def test_removing_is_idempotent_and_frees_the_share() -> None:
    table = admission(5, 1)
    a = Conn("a")
    table.admit(a, "x")
    table.remove(a)
    table.remove(a)
    assert len(table) == 0 and table.count("x") == 0
    assert table.admit(Conn("b"), "x").admitted
    with pytest.raises(ValueError):
        admission(0, 1)


@given(
    events=st.lists(
        st.tuples(st.sampled_from(["admit", "remove", "toggle"]), st.integers(0, 5), st.integers(0, 40)),
        max_size=200,
    )
)
def test_the_caps_hold_under_any_sequence(events: list[tuple[str, int, int]]) -> None:
    table = admission(8, 3)
    held: list[tuple[Conn, int]] = []
    for kind, source, pick in events:
        if kind == "admit":
            conn = Conn(f"c{len(held)}", idle=pick % 2 == 0)
            decision = table.admit(conn, str(source))
            for victim in decision.shed:
                assert victim.idle
                held = [(c, s) for c, s in held if c is not victim]
            if decision.admitted:
                held.append((conn, source))
        elif held:
            conn, _ = held[pick % len(held)]
            if kind == "remove":
                table.remove(conn)
                held = [(c, s) for c, s in held if c is not conn]
            else:
                conn.idle = not conn.idle
        assert len(table) == len(held) <= 8
        for s in range(6):
            assert table.count(str(s)) == sum(1 for _, src in held if src == s) <= 3
