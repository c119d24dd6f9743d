"""Board profiles as data (installed as ``edgeseg.boards``): one YAML file per board."""
