"""Calls to the public APIs, made with the signed-in user's key."""
