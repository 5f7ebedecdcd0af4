"""Running a batch end to end for the commands: wiring manifest, engine, providers and store
together; the console; checks on user-given paths; the batch's copies of its inputs; retry's
attempts."""
