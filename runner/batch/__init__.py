"""Running a batch end to end for the commands: wiring manifest, engine, providers and
store together, the console, the checks on user-given paths, and retry's attempts."""
