"""Protection of stored data and privacy-preserving use (issue 5): encryption at rest with blind
indexes, role-based masking, de-identified export, small-cell-suppressed aggregates."""
