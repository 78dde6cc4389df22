import pytest

from pi0lab.runtime.placement import parse_device_set, parse_placement


@pytest.mark.parametrize(
    "spec, expected",
    [("all", [0, 1, 2, 3, 4, 5, 6, 7]), ("0-3", [0, 1, 2, 3]), ("5", [5]), (2, [2]), ("0-1,4,6-7", [0, 1, 4, 6, 7])],
)
def test_device_sets(spec, expected):
    assert parse_device_set(spec, 8) == expected


@pytest.mark.parametrize("spec", ["3-1", "a", "0-", "1,1", "0--2", ""])
def test_bad_device_sets_say_what_is_valid(spec):
    with pytest.raises(ValueError, match="device set"):
        parse_device_set(spec, 8)


def test_device_out_of_range_names_the_range():
    with pytest.raises(ValueError, match=r"only 0-3 exist"):
        parse_device_set("2-5", 4)


def test_the_three_seed_placements():
    collocated = parse_placement({"env,rollout,actor": "all"}, 8)
    assert collocated == {c: list(range(8)) for c in ("env", "rollout", "actor")}
    shared = parse_placement({"env": "0-3", "rollout": "4-7", "actor": "0-7"}, 8)
    assert shared["env"] == [0, 1, 2, 3] and shared["rollout"] == [4, 5, 6, 7] and shared["actor"] == list(range(8))
    disjoint = parse_placement({"env": "0-1", "rollout": "2-5", "actor": "6-7"}, 8)
    assert disjoint == {"env": [0, 1], "rollout": [2, 3, 4, 5], "actor": [6, 7]}


def test_unknown_missing_and_twice_placed_components():
    with pytest.raises(ValueError, match="unknown component 'critic'"):
        parse_placement({"env,rollout,actor": "all", "critic": "0"}, 2)
    with pytest.raises(ValueError, match="does not place actor"):
        parse_placement({"env,rollout": "all"}, 2)
    with pytest.raises(ValueError, match="placed twice"):
        parse_placement({"env,rollout,actor": "all", "env": "0"}, 2)
