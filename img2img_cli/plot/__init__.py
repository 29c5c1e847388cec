"""X/Y/Z plots and contact sheets."""
