"""Each training entry point's settings, one record each (``get_config()``); flags and sweeps override fields."""
