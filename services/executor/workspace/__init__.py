"""Workspaces: one isolated OS environment per episode, behind a backend interface."""
