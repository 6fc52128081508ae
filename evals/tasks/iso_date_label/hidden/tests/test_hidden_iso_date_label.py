from datetime import date

from journal.labels import date_label, entry_title


def test_other_dates():
    assert date_label(date(1999, 12, 31)) == "1999-12-31"
    assert entry_title(date(2020, 1, 2), "hi") == "2020-01-02 hi"
