"""Audit (issue 5): IHE BALP AuditEvents in an append-only hash chain with signed checkpoints."""
