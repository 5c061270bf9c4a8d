"""runbooks: operations runbooks as code (Prefect 3 flows), their CLI and shared kit."""
