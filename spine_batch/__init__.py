"""Batch analysis of an archive of spine radiographs: `spine-batch SOURCE --out RESULTS` (issue 17).

One row per image, equal to what `POST /classify` answers for it: the rows are made through the same front
door and answer shaping (`spine_engine.answers.classify`) and carry the same error codes, never a copy of them;
nothing here imports the service. Two engines run the same
row function: a thread pool in this process (`--engine local`) and Ray Data with an actor pool of model
holders (`--engine ray`, one machine or a cluster). Results are a folder of Parquet parts, appended as work
finishes, so a killed run keeps what it did and a re-run skips it.
"""
