from games.ranking import top_n, winner


def test_top_two():
    scores = {"ann": 30, "bob": 10, "cid": 20}
    assert top_n(scores, 2) == ["ann", "cid"]


def test_winner():
    assert winner({"ann": 1, "bob": 5}) == "bob"
