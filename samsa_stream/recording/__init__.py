"""Session recordings (MCAP): the recorder, the replay and what a recording holds (``format``)."""
