"""Displays: the reference viewer and the prompt console."""
