"""Accounts and access: passwords, registry tokens (JWT), permissions, brute-force throttling."""
