"""Checking and reporting llama31_8b MLPerf logs with the official mlperf_logging tools.

Entry points (run from the repository root):
    python -m compliance.check LOG_OR_FOLDER [--ruleset 6.0.0] [--profile closed|smoke]
    python -m compliance.estimate --tokens-per-sec-per-gpu X --gpus N --gbs B

Library: `from compliance.check import check_log`. This package does not import its modules here,
so that `python -m compliance.check` runs its module exactly once.
"""
