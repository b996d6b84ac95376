"""The challenge report of a track (organizers): everything the platform knows that a challenge paper reports.

``GET /api/admin/challenges/{challenge}/tracks/{track}/report.json`` (:mod:`api.reports.routes`) returns the data
built by :func:`api.reports.service.build_report`; ``segarena admin report TRACK -o report.html`` renders it as one
offline HTML file (``segarena/report_html.py``). See docs/report.md.
"""

from api.reports.service import build_report

__all__ = ["build_report"]
