"""Publisher: results -> mask and overlay broadcasts for every display."""
