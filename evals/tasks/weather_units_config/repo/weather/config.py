"""Settings of the weather station."""

UNIT = "F"
STATION = "Harbour"
