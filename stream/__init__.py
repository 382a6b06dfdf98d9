"""metarec stream package."""
