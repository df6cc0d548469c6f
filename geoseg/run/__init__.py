"""6. The run on Ray: session, passes of tiles through actors, one bounded wait loop, the work dir (only here: ray)."""
