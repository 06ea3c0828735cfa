"""`wardround doctor`: checks of this machine's models and devices (`checks`), the tiny towers they load (`tiny_models`)."""
