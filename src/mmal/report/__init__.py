"""HTML report of a simulation: learning curves, 000 Table 1/2 analogs, case study."""

from mmal.report.html import write_report

__all__ = ["write_report"]
