"""switchboard-tickets: an example Switchboard action plugin.

Installing the distribution is all it takes: its `switchboard.actions` entry point
(`tickets = "switchboard_tickets.actions"`) makes Switchboard register `create_ticket` and
`list_tickets` at start-up. Tickets are kept in a JSON-lines file (`store.py`).
"""

__version__ = "0.1.0"
