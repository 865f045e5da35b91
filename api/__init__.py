"""The FastAPI service: routes, parameter validation, auth, and the error shape."""
