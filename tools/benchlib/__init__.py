"""The benchmark library behind ``tools/bench.py``: one module per subcommand (``step``, ``ops``, ``generation``,
``verify``), the step workloads per algorithm (``step_sft``, ``step_kd``, ``step_grpo``), the one step timer
(``timing``), random-weight workloads for any device (``synthetic``) and the shared helpers (``common``).

Every benchmark compares variants measured in the same session and prints a table and a final JSON line.
"""
