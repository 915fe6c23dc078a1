"""Discord: the gateway (discord.py) and HTTP interactions (Ed25519-verified) in, REST out."""
