"""Lead platforms: how each one proves a request is genuine, and how its payload becomes a raw lead."""
