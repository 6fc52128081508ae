"""A tiny calculator package: the sample repository Elpis works on."""
