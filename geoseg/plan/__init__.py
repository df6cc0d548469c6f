"""4. The plan: which tiles run, what the models need, every output path; the inputs checked once, up front."""
