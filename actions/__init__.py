"""The action framework (issue 6): typed async actions reachable as commands, buttons and LLM
tools. Nothing is registered yet; the engine does not route to actions until that lands."""
