"""Institution and staff registries and the electronic health code (issue 4)."""
