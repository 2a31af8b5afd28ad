"""The business view on hand-made lists: every figure worked out by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from recforge.business import business_view
from recforge.exceptions import DataError


def test_ctr_by_position_and_revenue_per_user_by_hand():
    lists = {"a": [1, 2, 3], "b": [4, 1, 5], "c": [2]}  # c's list is one item long
    held_out = pd.DataFrame(
        {"user": ["a", "a", "a", "b", "b", "d"], "item": [1, 3, 9, 5, 5, 1]}
    )  # b bought item 5 twice; d got no list; a's item 9 was not recommended
    prices = {1: 10.0, 2: 20.0, 3: 5.0, 4: 7.0, 5: 2.5, 9: 100.0}
    v = business_view(lists, held_out, k=3, prices=prices)
    assert v["n_users"] == 3 and v["k"] == 3
    # hits: a: 1 and 3 (positions 1, 3); b: 5 (position 3); c: none -> 3 of 7 filled slots
    assert v["ctr@3"] == pytest.approx(3 / 7, abs=1e-4)
    assert v["ctr_by_position"] == [pytest.approx(1 / 3, abs=1e-4), 0.0, 1.0]
    # revenue: a 10 + 5 = 15; b 2 x 2.5 = 5; c 0 -> ARPU 20 / 3
    assert v["arpu@3"] == pytest.approx(20 / 3, abs=0.01)
    # everything a, b, c did in the held-out period: 10 + 5 + 100 + 2.5 + 2.5 = 120 over 3
    assert v["held_out_arpu"] == pytest.approx(40.0)
    assert v["revenue_share@3"] == pytest.approx(20 / 120, abs=1e-4)


def test_k_cuts_lists_and_prices_are_optional():
    v = business_view({"a": [3, 1]}, pd.DataFrame({"user": ["a"], "item": [1]}), k=1)
    assert v["ctr@1"] == 0.0 and v["ctr_by_position"] == [0.0] and "arpu@1" not in v
    v = business_view({"a": [3, 1]}, pd.DataFrame({"user": ["a"], "item": [1]}), k=2)
    assert v["ctr@2"] == 0.5 and v["ctr_by_position"] == [0.0, 1.0]


def test_bad_input_names_the_column():
    with pytest.raises(DataError, match="'item'"):
        business_view({"a": [1]}, pd.DataFrame({"user": ["a"], "product": [1]}))
    with pytest.raises(DataError, match="k must be"):
        business_view({"a": [1]}, pd.DataFrame({"user": ["a"], "item": [1]}), k=0)
