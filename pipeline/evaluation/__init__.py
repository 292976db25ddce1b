"""Multi-view testing: aggregation of view scores into video predictions and the reports."""
