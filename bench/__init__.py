"""Programs that measure metarec; each writes its figures, and the machine they came from, to results/."""
