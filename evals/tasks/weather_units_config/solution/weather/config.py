"""Settings of the weather station."""

UNIT = "C"
STATION = "Harbour"
