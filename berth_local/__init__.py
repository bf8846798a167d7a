"""Local stand-in for API Gateway + Lambda, so the Chalice app runs as a real registry on a laptop."""
