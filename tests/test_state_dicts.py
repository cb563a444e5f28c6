"""The one wording of a state dict that does not fit: counts, the first keys, and how many more."""

from __future__ import annotations

from vireid.utils.state_dicts import key_problems, listing, shape_mismatch


def test_listing_shows_the_first_items_and_counts_the_rest():
    assert listing(["a", "b"]) == "a, b"
    assert listing([f"k{i}" for i in range(8)]) == "k0, k1, k2, k3, k4 (+3 more)"
    assert listing(["a", "b", "c"], shown=1) == "a (+2 more)"


def test_key_problems_names_each_kind_with_its_count():
    problems = key_problems(["w"], [f"x{i}" for i in range(6)], [shape_mismatch("fc.weight", (4, 512), (5, 512))])
    assert problems == ["1 missing key(s): w", "6 unexpected key(s): x0, x1, x2, x3, x4 (+1 more)",
                        "1 shape mismatch(es): fc.weight (checkpoint (4, 512) vs model (5, 512))"]
    assert key_problems([], [], []) == []
    assert key_problems(unexpected=["u"]) == ["1 unexpected key(s): u"]
