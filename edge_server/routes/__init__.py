"""HTTP routes, one module per protocol. Each route parses, calls the service, formats."""
