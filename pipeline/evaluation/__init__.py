"""Multi-view testing of a trained network (built once from its checkpoint): aggregation of view
scores into video predictions, the reports, the attention examples and what a score was measured on."""
