"""Device tooling: board profiles (data in ``edgeseg.boards``) and ``doctor``."""
