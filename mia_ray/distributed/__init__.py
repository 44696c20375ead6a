"""The only code that imports ray: Ray Data scoring and the Ray Tune sweep."""
