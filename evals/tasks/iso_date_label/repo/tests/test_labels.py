from datetime import date

from journal.labels import date_label


def test_zero_padded():
    assert date_label(date(2024, 3, 7)) == "2024-03-07"
