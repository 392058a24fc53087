"""Many runs: sweep specs and their trials, the executors that run them, and their records.

Data flow: ``spec`` (a sweep file or ``--set key=a,b`` lists -> the list of trials, each one
validated as a full config) -> ``executors`` (a local process pool or a Dask client, one
``concurrent.futures``-style interface) -> ``runner`` (one trial, trained through
``mlp_cli.training.loop``) -> ``records`` (``trials.jsonl`` and the sweep directory's layout),
with ``sweep`` tying them together. Only the CLI prints; these modules return values or raise.
"""
