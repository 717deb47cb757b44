"""Training through the swarm: data sets, the mixture classifier, the training loop, ``tesseract train``."""
