"""The action framework: typed async actions reachable as commands (`/name`, `!name`), as
buttons and as LLM tools, permissioned per deployment and audited in Postgres.

```python
from actions import action, ActionContext
from pydantic import BaseModel

class CreateTicket(BaseModel):
    title: str

@action(description="Open a ticket in the team's tracker", confirm=True, roles={"support"})
async def create_ticket(ctx: ActionContext, args: CreateTicket) -> str: ...
```

Modules: `spec` (the decorator and context), `arguments` (parsing, usage, schemas),
`registry` (discovery: entry points and BOT_ACTION_MODULES), `policy` (permissions),
`runner` (running, confirmation, audit), `audit`, `stage` (the pipeline stage), `tools`
(actions as LLM tools), `builtin` (help, reset, sources, feedback, search, http_request).
See docs/actions.md.
"""

from actions.spec import (
    ActionButton,
    ActionContext,
    ActionError,
    ActionResult,
    ActionSpec,
    Caller,
    action,
)

__all__ = ["ActionButton", "ActionContext", "ActionError", "ActionResult", "ActionSpec",
           "Caller", "action"]
