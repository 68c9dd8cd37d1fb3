"""Plugbox's client side: `plug`, which deploys a project to its host."""
