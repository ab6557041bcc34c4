"""HTTP routes, one module per protocol. Each route parses, calls the service, formats.

Each module declares its routes in a table (`ROUTES`, see table.py) of plain
functions that take the server state first; the app binds them to the state
when it registers them, so no route module imports the app.
"""
