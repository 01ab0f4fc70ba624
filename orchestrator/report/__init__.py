"""The rank-consistency report: does each subset rank training configurations like the full dataset?"""

from orchestrator.report.decision import Criterion, Decision
from orchestrator.report.ranking import JobResult, Report, build_report
from orchestrator.report.render import print_report, report_json, write_report_files

__all__ = ["Criterion", "Decision", "JobResult", "Report", "build_report", "print_report", "report_json",
           "write_report_files"]
