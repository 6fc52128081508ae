"""Unit prices in euros."""

PRICES = {
    "apple": 0.3,
    "banana": 0.25,
    "orange": 0.6,
}
