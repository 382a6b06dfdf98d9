"""Programs that measure metarec; each writes its figures, with the machine they came from, to bench/results/."""
