"""Built-in data: synthetic scenes, bundled real photos, and readers for user data formats."""
