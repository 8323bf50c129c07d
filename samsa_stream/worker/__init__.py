"""Worker: segments the freshest frame for every clicked object and answers prompt requests."""
