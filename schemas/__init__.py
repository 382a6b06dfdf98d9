"""metarec schemas package."""
