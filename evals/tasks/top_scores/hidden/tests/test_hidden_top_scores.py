from games.ranking import top_n


def test_top_one_and_all():
    scores = {"a": 3, "b": 9, "c": 5, "d": 1}
    assert top_n(scores, 1) == ["b"]
    assert top_n(scores, 4) == ["b", "c", "a", "d"]
