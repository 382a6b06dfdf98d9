"""metarec models package."""
