"""A KIS-protocol-faithful server with a synthetic two-venue market, replay and faults."""
