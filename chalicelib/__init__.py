"""Berth's Lambda code: everything here is packaged by Chalice and runs on the request path."""
