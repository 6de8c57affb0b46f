"""A small SaaS backend that puts the upload gateway behind its own sign-in."""
