"""`python -m d2r report`: the HTML report and metrics of one experiment (d2r/report.py)."""

from d2r.report import add_arguments, run  # noqa: F401
