"""A whole swarm on one machine: ``tesseract swarm --local`` (the command; processes in ``launch``)."""
