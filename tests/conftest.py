"""Fixtures shared by the Python-level tests."""

import pytest

from amaranth_sim import simulate as _simulate


@pytest.fixture
def simulate():
    """:func:`amaranth_sim.simulate`: one component's unit test in Amaranth's simulator."""
    return _simulate
