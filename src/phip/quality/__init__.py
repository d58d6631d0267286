"""Data quality engine (issue 6): rules as data, incremental findings at ingest, scorecards."""
