# Marks the repository root for pytest, so `import calc` works from the tests.
