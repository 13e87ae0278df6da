"""The project's 30 dialogue chains and 10 evaluation openers, and the loaders that refuse bad data."""
